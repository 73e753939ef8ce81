"""Headquarters' side of the uplink: ``edge-agent fleet ingest``.

Subscribes (QoS 1, a persistent MQTT 5 session, so what is published while ingest is
down is delivered when it returns) to every site's audit records and status, and keeps
per site, in ``OUT/<site id>/``:

* ``audit/``: the layout of an agent's audit directory, so ``edge-agent audit verify
  --state-dir OUT/<site> --key <the site's exported verify.key>`` proves the copy and
  ``edge-agent events --state-dir OUT/<site>`` reads it: ``audit-<first seq>.jsonl``, the
  site's records, each exactly once, in sequence order (duplicates after a site's crash
  are dropped by (site, seq)); ``checkpoints.jsonl``, the checkpoints the site sealed,
  once each, written only when the records they seal are; ``horizon.json`` when the copy
  starts after record 1; ``COPY.json`` saying it is headquarters' copy;
* ``ingest.json``: the last seq and hash taken, the problems found;
* ``status.json``: the newest status (a death is believed only from the newest session).

Tamper evidence leaves the box: every record's hash is recomputed, each must chain to the
one before (``prev``), and a record that arrives again with the same seq but other
content (a log rewritten after forwarding) is flagged, never stored over the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from edge_agent.errors import EdgeAgentError
from edge_agent.store.audit import GENESIS, record_hash
from edge_agent.store.durable import atomic_write, private_dir

log = logging.getLogger(__name__)


class FleetError(EdgeAgentError):
    """Ingest could not run (broker unreachable, output not writable)."""


@dataclass
class SiteLog:
    root: Path
    last_seq: int = 0
    last_hash: str = GENESIS
    hashes: dict[int, str] = field(default_factory=dict)
    pending: dict[int, dict[str, Any]] = field(default_factory=dict)  # out of order
    problems: list[str] = field(default_factory=list)
    duplicates: int = 0
    status: dict[str, Any] | None = None
    segment: Path | None = None
    cp_epochs: dict[int, str] = field(default_factory=dict)  # epoch -> its MAC
    cp_pending: list[tuple[int, int, bytes]] = field(default_factory=list)

    @classmethod
    def open(cls, root: Path) -> SiteLog:
        site = cls(root)
        audit = root / "audit"
        audit.mkdir(parents=True, exist_ok=True)
        old = audit / "audit-000001.jsonl"  # the name earlier versions of ingest used
        segments = sorted(audit.glob("audit-" + "[0-9]" * 12 + ".jsonl"))
        if old.exists() and not segments:
            first = old.read_bytes().split(b"\n", 1)[0]
            seq = int(json.loads(first)["seq"]) if first else 1
            old.rename(audit / f"audit-{seq:012d}.jsonl")
            segments = sorted(audit.glob("audit-" + "[0-9]" * 12 + ".jsonl"))
        for seg in segments:
            site.segment = seg
            for line in seg.read_bytes().splitlines():
                rec = json.loads(line)
                site.hashes[int(rec["seq"])] = str(rec["hash"])
                site.last_seq, site.last_hash = int(rec["seq"]), str(rec["hash"])
        cps = audit / "checkpoints.jsonl"
        if cps.exists():
            for line in cps.read_bytes().splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    cp = json.loads(line)
                    site.cp_epochs[int(cp["epoch"])] = str(cp.get("mac"))
        meta = root / "ingest.json"
        if meta.exists():
            site.problems = list(json.loads(meta.read_bytes()).get("problems", []))
        return site

    def flag(self, problem: str) -> None:
        log.error("%s: %s", self.root.name, problem)
        self.problems.append(problem)

    def take(self, rec: dict[str, Any]) -> None:
        seq, digest = int(rec["seq"]), str(rec["hash"])
        if record_hash(rec) != digest:
            self.flag(f"seq {seq}: its hash does not match its content (altered in transit "
                      "or on the box)")
            return
        if seq in self.hashes:
            if self.hashes[seq] == digest:
                self.duplicates += 1  # a resend after the site's crash: already stored
            else:
                self.flag(f"seq {seq} arrived again with other content: the site's log was "
                          "rewritten after it was forwarded")
            return
        if seq <= self.last_seq:
            self.flag(f"seq {seq} arrived after {self.last_seq} and was never seen before: "
                      "a gap the site filled later")
            return
        self.pending[seq] = rec
        self._drain()

    def take_checkpoint(self, line: bytes) -> None:
        """A checkpoint the site sealed: kept once, written when its records are."""
        try:
            cp = json.loads(line)
            epoch, seq = int(cp["epoch"]), int(cp["seq"])
        except (ValueError, KeyError, TypeError):
            self.flag("an unreadable checkpoint arrived")
            return
        known = self.cp_epochs.get(epoch)
        if known is not None:
            if known != str(cp.get("mac")):
                self.flag(f"checkpoint epoch {epoch} arrived again with another MAC: the "
                          "site re-sealed its log after forwarding")
            return
        if any(e == epoch for e, _, _ in self.cp_pending):
            return
        self.cp_pending.append((epoch, seq, line.rstrip(b"\n")))
        self._write_checkpoints()

    def _write_checkpoints(self) -> None:
        ready = sorted(c for c in self.cp_pending if c[1] <= self.last_seq)
        if not ready:
            return
        self.cp_pending = [c for c in self.cp_pending if c[1] > self.last_seq]
        fd = os.open(self.root / "audit" / "checkpoints.jsonl",
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, b"".join(line + b"\n" for _, _, line in ready))
            os.fsync(fd)
        finally:
            os.close(fd)
        for epoch, _, line in ready:
            self.cp_epochs[epoch] = str(json.loads(line).get("mac"))

    def _drain(self) -> None:
        lines = []
        while True:
            nxt = self.last_seq + 1
            rec = self.pending.pop(nxt, None)
            if rec is None and not self.hashes and self.pending:
                # The first record ingest ever sees from this site (it joined late or the
                # site's older records were removed by retention): start the chain there.
                first = min(self.pending)
                rec = self.pending.pop(first)
                self.last_seq, self.last_hash = first - 1, str(rec.get("prev"))
            if rec is None:
                break
            if rec.get("prev") != self.last_hash:
                self.flag(f"seq {rec['seq']} does not chain to seq {self.last_seq} (prev "
                          f"{str(rec.get('prev'))[:12]}…, expected {self.last_hash[:12]}…)")
            if self.segment is None:
                self._start_copy(int(rec["seq"]), str(rec.get("prev")))
            self.last_seq, self.last_hash = int(rec["seq"]), str(rec["hash"])
            self.hashes[self.last_seq] = self.last_hash
            lines.append(json.dumps(rec, sort_keys=True, separators=(",", ":"),
                                    ensure_ascii=False).encode() + b"\n")
        if lines:
            assert self.segment is not None
            fd = os.open(self.segment, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, b"".join(lines))
                os.fsync(fd)
            finally:
                os.close(fd)
            self._write_checkpoints()

    def _start_copy(self, first: int, prev: str) -> None:
        """The copy's first segment, named as the agent names its own; a horizon if the
        copy starts after record 1 (ingest joined late, or the site's retention ran)."""
        audit = self.root / "audit"
        self.segment = audit / f"audit-{first:012d}.jsonl"
        atomic_write(audit / "COPY.json", json.dumps({
            "copy_of": self.root.name, "by": "edge-agent fleet ingest",
            "first_seq": first}, sort_keys=True).encode())
        if first > 1:
            atomic_write(audit / "horizon.json", json.dumps(
                {"first_seq": first, "prev_hash": prev, "copy": True}).encode())

    def set_status(self, doc: dict[str, Any]) -> None:
        old = self.status
        if old is not None and not doc.get("online") and int(doc.get("session", 0)) < int(
                old.get("session", 0)):
            return  # an old session's will: the site came back since
        self.status = doc
        atomic_write(self.root / "status.json", json.dumps(doc, sort_keys=True).encode())

    def save(self) -> None:
        atomic_write(self.root / "ingest.json", json.dumps({
            "last_seq": self.last_seq, "last_hash": self.last_hash,
            "waiting_for": sorted(self.pending)[:20], "duplicates_dropped": self.duplicates,
            "problems": self.problems}, indent=1).encode())

    def to_json(self) -> dict[str, Any]:
        return {"site": self.root.name, "last_seq": self.last_seq,
                "gaps_waiting": len(self.pending), "duplicates_dropped": self.duplicates,
                "problems": self.problems, "online": (self.status or {}).get("online"),
                "health": (self.status or {}).get("health"),
                "backlog": (self.status or {}).get("backlog")}


class Ingest:
    def __init__(self, broker: str, out: Path, prefix: str = "edge-agent",
                 client_id: str = "edge-agent-ingest", *, ca: str | None = None,
                 cert: str | None = None, key: str | None = None) -> None:
        url = urllib.parse.urlsplit(broker)
        if url.scheme not in ("mqtt", "mqtts"):
            raise FleetError(f"{broker}: give mqtt://host:port or mqtts://host:port")
        self.host = url.hostname or "localhost"
        self.port = url.port or (8883 if url.scheme == "mqtts" else 1883)
        self.tls: ssl.SSLContext | None = None
        if url.scheme == "mqtts":
            # The broker's certificate is verified (the force's CA, else the system's);
            # headquarters' own certificate where the broker asks for one.
            try:
                self.tls = ssl.create_default_context(cafile=ca)
                if cert:
                    self.tls.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as exc:
                raise FleetError(f"TLS for {broker}: {exc}") from exc
        elif ca or cert:
            raise FleetError(f"{broker}: --ca/--cert need mqtts://")
        self.out = out
        self.prefix = prefix.rstrip("/")
        self.client_id = client_id
        self.sites: dict[str, SiteLog] = {}
        self.received = 0

    def site(self, site_id: str) -> SiteLog:
        if site_id not in self.sites:
            if not site_id or "/" in site_id or site_id.startswith("."):
                raise ValueError(f"bad site id {site_id!r}")
            self.sites[site_id] = SiteLog.open(self.out / site_id)
        return self.sites[site_id]

    def handle(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        site_id, kind = parts[-2], parts[-1]
        try:
            doc = json.loads(payload)
            site = self.site(site_id)
        except ValueError as exc:
            log.error("ingest: %s: unreadable message (%s)", topic, exc)
            return
        if kind == "status":
            site.set_status(doc)
            return
        if kind == "checkpoint":
            site.take_checkpoint(payload)
            return
        if doc.pop("site", site_id) != site_id:
            site.flag(f"a record published under {site_id} claims another site")
            return
        self.received += 1
        site.take(doc)

    async def run(self, stop: asyncio.Event) -> None:
        private_dir(self.out)
        delay = 0.5
        while not stop.is_set():
            try:
                async with aiomqtt.Client(
                        self.host, self.port, identifier=self.client_id,
                        protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
                        properties=_session_props(), timeout=10,
                        tls_context=self.tls) as client:
                    await client.subscribe(f"{self.prefix}/+/audit", qos=1)
                    await client.subscribe(f"{self.prefix}/+/status", qos=1)
                    await client.subscribe(f"{self.prefix}/+/checkpoint", qos=1)
                    delay = 0.5
                    last_save = time.monotonic()
                    async for msg in _until(client.messages, stop):
                        raw = msg.payload
                        self.handle(str(msg.topic), bytes(raw) if isinstance(
                            raw, (bytes, bytearray)) else str(raw).encode())
                        if time.monotonic() - last_save > 1.0:
                            self.save()
                            last_save = time.monotonic()
            except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:
                log.warning("ingest: %s:%d: %s; retrying", self.host, self.port, exc)
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, 10.0)
            finally:
                self.save()

    def save(self) -> None:
        for s in self.sites.values():
            s.save()


def _session_props() -> Any:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 7 * 24 * 3600  # queued for a week while ingest is down
    return props


async def _until(messages: Any, stop: asyncio.Event) -> Any:
    """Messages until ``stop`` is set (checked at least every half second)."""
    it = messages.__aiter__()
    while not stop.is_set():
        try:
            yield await asyncio.wait_for(it.__anext__(), 0.5)
        except TimeoutError:
            continue
        except StopAsyncIteration:
            return
