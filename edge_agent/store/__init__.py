"""Persistent state: the device registry (TinyDB) and the append-only audit log."""

from edge_agent.store.audit import AuditLog, AuditRecord, canonical_json
from edge_agent.store.registry import StateStore

__all__ = ["AuditLog", "AuditRecord", "StateStore", "canonical_json"]
