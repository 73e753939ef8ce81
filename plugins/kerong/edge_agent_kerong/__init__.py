"""Kerong KR-CU16 lock board plugin for edge-agent."""

__version__ = "1.0.0"
