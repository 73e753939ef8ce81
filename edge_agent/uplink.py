"""The site's uplink to headquarters over MQTT 5: the audit log is the outbox.

* **Forwarding.** Every audit record, in sequence order, is published at QoS 1 to
  ``PREFIX/SITE/audit`` (the record's own canonical JSON, so headquarters can re-check its
  hash and chain). A durable cursor (``uplink.json``: the highest seq the broker
  acknowledged, written atomically and fsynced) advances only on PUBACK, so a restart, a
  kill -9 or a broker outage loses nothing; after a crash a few records may be sent twice,
  and ingest drops them by (site, seq). Retention never removes a record above the cursor
  (``AuditLog.retention_floor``); a backlog beyond ``disk_budget_mb`` raises a critical
  alarm instead of dropping anything.
* **Site status.** A retained ``PREFIX/SITE/status``: birth on connect, every
  ``status_interval`` seconds, and a last-will death message. Each connection has a new
  session number (kept with the cursor), so the will of an old session cannot mark a
  live site dead: a reader trusts a death only if its session is the newest it has seen
  (the Sparkplug B ``bdSeq`` idea).

Nothing received from the broker is acted on here: the uplink only publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt

from edge_agent.alarms import Alarm
from edge_agent.mqtt import CheckedClient, PublishRefused
from edge_agent.store.audit import AuditRecord, Query, canonical_json
from edge_agent.store.durable import atomic_write

if TYPE_CHECKING:
    from edge_agent.config import UplinkSection
    from edge_agent.runtime import Runtime

log = logging.getLogger(__name__)
BATCH = 500  # records read from the log at a time
WINDOW = 100  # QoS 1 publishes in flight at once
SAVE_EVERY = 0.2  # seconds between durable cursor writes while draining
REFUSED_ALARM = "uplink:refused"


class Uplink:
    def __init__(self, rt: Runtime, cfg: UplinkSection, state_dir: Path, site: str,
                 status: Callable[[], dict[str, Any]],
                 load_entitlements: Callable[..., Awaitable[Any]] | None = None,
                 boot_id: str = "") -> None:
        self.rt = rt
        self.cfg = cfg
        self.site = site
        self.status_fn = status
        self.cursor_path = state_dir / "uplink.json"
        self.acked = 0
        self.session = 0
        self.connected = False
        self.last_error = ""
        self.sent = 0
        self._unsent_ts: dict[int, str] = {}  # seq -> ts of records read, not yet acked
        self._publisher: aiomqtt.Client | None = None  # while connected
        url = urllib.parse.urlsplit(cfg.broker)
        self.tls = url.scheme == "mqtts"
        self.host = url.hostname or "localhost"
        self.port = url.port or (8883 if self.tls else 1883)
        prefix = cfg.topic_prefix.rstrip("/")
        self.audit_topic = f"{prefix}/{site}/audit"
        # Sealed checkpoints go up too: headquarters' copy of the log can then be proven
        # with the site's exported verify key (``audit verify --state-dir OUT/<site>``).
        self.checkpoint_topic = f"{prefix}/{site}/checkpoint"
        self.cp_offset = 0  # bytes of checkpoints.jsonl forwarded
        self.cp_epoch = -1  # the newest checkpoint epoch the broker took
        self.status_topic = f"{prefix}/{site}/status"
        # Down to the sites: signed entitlement snapshots, for this site or for all.
        self.entitlement_topics = (f"{prefix}/{site}/entitlements", f"{prefix}/all/entitlements")
        self.command_topics = (f"{prefix}/{site}/command", f"{prefix}/all/command")
        self.on_command: Callable[..., Awaitable[Any]] | None = None
        self.load_entitlements = load_entitlements
        self.boot_id = boot_id
        self.last_snapshot = ""
        self._birth_ts = 0.0
        self._wake = asyncio.Event()
        self._save_lock = threading.Lock()

    # ------------------------------------------------------------------ cursor

    def load(self) -> None:
        """Read the cursor (blocking). A missing file: nothing forwarded yet."""
        try:
            doc = json.loads(self.cursor_path.read_bytes())
            self.acked, self.session = int(doc["acked_seq"]), int(doc["session"])
            self.cp_offset = int(doc.get("cp_offset", 0))
            self.cp_epoch = int(doc.get("cp_epoch", -1))
        except FileNotFoundError:
            self.acked, self.session = 0, 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Resend from the start rather than skip: ingest drops what it already has.
            log.error("uplink: cursor %s unreadable (%s): forwarding from the start",
                      self.cursor_path, exc)
            self.acked = 0

    def _save(self) -> None:
        # One writer at a time: a save cancelled on the loop goes on in its thread while
        # the stop path saves again, and both would rename the same temporary file.
        with self._save_lock:
            self._write_cursor()

    def _write_cursor(self) -> None:
        atomic_write(self.cursor_path, canonical_json(
            {"acked_seq": self.acked, "session": self.session, "site": self.site,
             "cp_offset": self.cp_offset, "cp_epoch": self.cp_epoch}))

    def to_json(self) -> dict[str, Any]:
        last = self.rt.audit.last_seq or 0
        return {"broker": self.cfg.broker, "connected": self.connected,
                "acked_seq": self.acked, "backlog": max(0, last - self.acked),
                "session": self.session, "sent": self.sent, "error": self.last_error}

    # ------------------------------------------------------------------ running

    def start(self) -> None:
        self.rt.audit.retention_floor = lambda: self.acked
        self.rt.audit.subscribers.append(lambda _rec: self._wake.set())  # on the loop
        self.rt.spawn(self.run(), "uplink")

    def _client(self, *, down: bool = False) -> aiomqtt.Client:
        password = None
        if self.cfg.password_file:
            password = Path(self.cfg.password_file).read_text(encoding="utf-8").strip()
        tls = None
        if self.tls:
            tls = ssl.create_default_context(cafile=self.cfg.ca)
            if self.cfg.cert:
                tls.load_cert_chain(self.cfg.cert, self.cfg.key)
        will = None if down else aiomqtt.Will(
            self.status_topic, self._status_payload(online=False), qos=1, retain=True)
        # One client id per run: two boxes claiming one site must both stay connected (and
        # see each other), not take each other's session over in turn.
        return CheckedClient(self.host, self.port,
                              identifier=f"edge-agent-{self.site}-{self.boot_id or self.session}"
                              + ("-down" if down else ""),
                              username=self.cfg.username, password=password,
                              protocol=aiomqtt.ProtocolVersion.V5, will=will,
                              tls_context=tls, keepalive=15, timeout=10)

    def _status_payload(self, *, online: bool, stopped: bool = False) -> bytes:
        doc: dict[str, Any] = {"site": self.site, "online": online, "session": self.session,
                               "boot": self.boot_id, "ts": time.time()}
        if stopped:
            doc["stopped"] = True  # a clean stop, not a death (the will says nothing)
        if online:
            st = self.status_fn()
            last = self.rt.audit.last_seq or 0
            doc.update({"health": st.get("health"), "devices": st.get("devices"),
                        "alarms": [a.get("message") for a in st.get("alarms", [])][:20],
                        "backlog": max(0, last - self.acked), "acked_seq": self.acked,
                        "oldest_unsent_s": self._oldest_unsent(last),
                        "entitlements": st.get("entitlements")})
        return canonical_json(doc)

    async def run(self) -> None:
        delay = 0.5
        await asyncio.to_thread(self.load)
        while not self.rt.stopping.is_set():
            self.session += 1
            await asyncio.to_thread(self._save)
            try:
                # Two connections: one publishes (and carries the will), one listens. An
                # aiomqtt client that also iterates its messages publishes at a third of
                # the rate (bench/uplink_drain.py).
                async with self._client() as client, self._client(down=True) as down:
                    self._birth_ts = time.time()
                    await client.publish(self.status_topic, self._status_payload(online=True),
                                         qos=1, retain=True)
                    delay = 0.5
                    for topic in (*self.entitlement_topics, *self.command_topics,
                                  self.status_topic):
                        await down.subscribe(topic, qos=1)
                    # Connected once it listens too: a command sent from then on is heard.
                    self.connected, self.last_error = True, ""
                    log.info("uplink: connected to %s (session %d), forwarding after seq %d",
                             self.cfg.broker, self.session, self.acked)
                    listener = asyncio.get_running_loop().create_task(self._listen(down))
                    self._publisher = client
                    try:
                        await self._forward(client)
                    finally:
                        self._publisher = None
                        listener.cancel()
            except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:
                if isinstance(exc, PublishRefused):
                    # Not acknowledged, so not forwarded: kept and sent again. Someone must
                    # fix the broker's ACL or this site's certificate.
                    self.rt.alarms.raise_(Alarm(
                        REFUSED_ALARM, "critical", f"headquarters' broker refuses this "
                        f"site's records ({exc}): check its ACL for site {self.site} and "
                        "this site's certificate; nothing is lost, the backlog is kept"))
                if self.connected or not self.last_error:
                    log.warning("uplink: %s: %s; retrying (backlog is kept in the audit "
                                "log)", self.cfg.broker, exc)
                self.last_error = str(exc) or type(exc).__name__
            finally:
                self.connected = False
            try:
                await asyncio.wait_for(self.rt.stopping.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, 30.0)

    async def _forward(self, client: aiomqtt.Client) -> None:
        """Publish from the cursor on, WINDOW at a time without stopping between batches;
        the cursor follows the highest sequence number below which every record has its
        PUBACK, and is made durable at least every SAVE_EVERY seconds (and when idle)."""
        next_status = time.monotonic() + self.cfg.status_interval
        next_checkpoints = 0.0
        sem = asyncio.Semaphore(WINDOW)
        done: set[int] = set()
        failed: list[BaseException] = []
        pending: set[asyncio.Task[None]] = set()
        sent_upto = self.acked
        saved_at = time.monotonic()
        unsaved = False

        async def one(seq: int, payload: bytes) -> None:
            try:
                await client.publish(self.audit_topic, payload, qos=1)
                done.add(seq)
            except BaseException as exc:  # the connection failed: resend from the cursor
                failed.append(exc)
                raise
            finally:
                sem.release()

        try:
            while not self.rt.stopping.is_set():
                if failed:
                    raise failed[0]
                batch = await asyncio.to_thread(self._read, sent_upto)
                for rec in batch:
                    self._unsent_ts[int(rec["seq"])] = str(rec.get("ts", ""))
                    await sem.acquire()
                    if failed:
                        sem.release()
                        raise failed[0]
                    payload = canonical_json({**rec, "site": self.site})
                    task = asyncio.get_running_loop().create_task(one(int(rec["seq"]), payload))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                if batch:
                    sent_upto = int(batch[-1]["seq"])
                unsaved = self._advance(done) or unsaved
                idle = not batch
                # At most one durable cursor write per SAVE_EVERY, busy or not: a trickle
                # of records (10/s at a quiet site) must not cost a write + 2 fsyncs
                # each. A crash resends at most SAVE_EVERY's worth; ingest drops those.
                if unsaved and time.monotonic() - saved_at >= SAVE_EVERY:
                    await asyncio.to_thread(self._save)
                    saved_at, unsaved = time.monotonic(), False
                    self._budget()
                if idle:
                    self._wake.clear()
                    wait = SAVE_EVERY if pending or self.acked < sent_upto or unsaved \
                        else max(0.1, next_status - time.monotonic())
                    try:
                        await asyncio.wait_for(self._wake.wait(), wait)
                    except TimeoutError:
                        pass
                if idle and time.monotonic() >= next_checkpoints:
                    next_checkpoints = time.monotonic() + 2.0
                    if await self._forward_checkpoints(client):
                        await asyncio.to_thread(self._save)
                if time.monotonic() >= next_status:
                    await client.publish(self.status_topic,
                                         self._status_payload(online=True), qos=1,
                                         retain=True)
                    next_status = time.monotonic() + self.cfg.status_interval
        finally:
            for task in pending:
                task.cancel()
            if self._advance(done) or unsaved:
                await asyncio.shield(asyncio.to_thread(self._save))
            self._unsent_ts.clear()  # read again from the cursor on the next connection

    async def close(self) -> None:
        """A clean stop: say so on the retained status (headquarters shows STOPPED, not
        a silent site), before the agent cancels the uplink's tasks."""
        client = self._publisher
        if client is None or not self.connected:
            return
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError, OSError):
            async with asyncio.timeout(2):
                await client.publish(self.status_topic,
                                     self._status_payload(online=False, stopped=True),
                                     qos=1, retain=True)

    def _oldest_unsent(self, last: int) -> float | None:
        """Seconds since the oldest record the broker has not acknowledged was written."""
        if last <= self.acked:
            return 0.0
        ts = self._unsent_ts.get(self.acked + 1)
        if ts is None:
            return None
        try:
            return round(max(0.0, time.time() - dt.datetime.fromisoformat(ts).timestamp()), 1)
        except ValueError:
            return None

    def _new_checkpoints(self) -> tuple[list[tuple[int, bytes]], int]:
        """Checkpoint lines after the forwarded offset, as (epoch, line), and the offset
        after the last whole line (blocking). A file repaired after a crash (shorter
        than the offset) is read again from the start; epochs already taken are skipped."""
        path = self.rt.audit.dir / "checkpoints.jsonl"
        try:
            with open(path, "rb") as f:
                size = f.seek(0, 2)
                start = self.cp_offset if self.cp_offset <= size else 0
                f.seek(start)
                data = f.read(min(size - start, 4 << 20))
        except FileNotFoundError:
            return [], 0
        out = []
        pos = 0
        while (nl := data.find(b"\n", pos)) >= 0:
            line = data[pos:nl]
            try:
                doc = json.loads(line)
                epoch, seq = int(doc["epoch"]), int(doc["seq"])
            except (ValueError, KeyError, TypeError):
                pos = nl + 1
                continue  # a torn line set aside by the store: not a checkpoint
            if seq > self.acked:
                break  # it seals records headquarters does not have yet: later
            if epoch > self.cp_epoch:
                out.append((epoch, line))
            pos = nl + 1
        return out, start + pos

    async def _forward_checkpoints(self, client: aiomqtt.Client) -> bool:
        lines, offset = await asyncio.to_thread(self._new_checkpoints)
        for epoch, line in lines:
            await client.publish(self.checkpoint_topic, line, qos=1)
            self.cp_epoch = epoch
        moved = offset != self.cp_offset
        self.cp_offset = offset
        return moved or bool(lines)

    def _advance(self, done: set[int]) -> bool:
        moved = False
        if self.acked + 1 in done:
            self.rt.alarms.clear(REFUSED_ALARM)
        while self.acked + 1 in done:
            done.discard(self.acked + 1)
            self._unsent_ts.pop(self.acked + 1, None)
            self.acked += 1
            self.sent += 1
            moved = True
        return moved

    async def _listen(self, client: aiomqtt.Client) -> None:
        """What comes down: signed entitlements (verified exactly as a file load is, and
        audited either way) and this site's own status (another agent claiming the site
        id is an alarm). Nothing from the broker can open a compartment."""
        async for msg in client.messages:
            raw = msg.payload
            topic = str(msg.topic)
            payload = bytes(raw) if isinstance(raw, (bytes, bytearray)) else str(raw).encode()
            if topic == self.status_topic:
                self._other_agent(payload)
            elif topic in self.entitlement_topics and self.load_entitlements is not None:
                await self._entitlements(topic, payload)
            elif topic in self.command_topics and self.on_command is not None and payload:
                await self._command(topic, payload)

    def _other_agent(self, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
        except ValueError:
            return
        # A retained status of this box's previous run (its will not yet sent) is older
        # than our birth; another box publishing now is newer.
        if doc.get("online") and doc.get("boot") and doc.get("boot") != self.boot_id \
                and float(doc.get("ts") or 0) > self._birth_ts:
            msg = (f"another agent publishes as site {self.site} (boot {doc['boot']}, "
                   f"session {doc.get('session')}): two boxes share one site id")
            if "uplink:duplicate-site" not in self.rt.alarms:
                log.error("uplink: %s", msg)
            self.rt.alarms.raise_(Alarm("uplink:duplicate-site", "critical", msg))

    async def _entitlements(self, topic: str, payload: bytes) -> None:
        from edge_agent.errors import EdgeAgentError

        load = self.load_entitlements
        if load is None:
            return
        digest = hashlib.sha256(payload).hexdigest()
        if not payload or digest == self.last_snapshot:
            return  # the retained copy again, or a cleared topic
        self.last_snapshot = digest
        try:
            await load(payload, actor=f"uplink:{topic}")
        except EdgeAgentError as exc:  # refused and audited by the load itself
            log.error("uplink: entitlements from %s refused: %s", topic, exc)

    async def _command(self, topic: str, payload: bytes) -> None:
        from edge_agent.errors import EdgeAgentError

        assert self.on_command is not None
        try:
            doc = json.loads(payload)
        except ValueError:
            doc = None
        try:
            await self.on_command(doc, source=f"uplink:{topic}")
        except EdgeAgentError as exc:  # refused and audited by the custody service
            log.error("uplink: command from %s refused: %s", topic, exc)

    def _read(self, after: int) -> list[AuditRecord]:
        out: list[AuditRecord] = []
        for rec in self.rt.audit.iter_query(Query(after_seq=after, limit=None)):
            out.append(rec)
            if len(out) >= BATCH:
                break
        return out

    def _budget(self) -> None:
        backlog = (self.rt.audit.last_seq or 0) - self.acked
        # A record is a few hundred bytes: estimate the backlog's disk use from its count.
        mb = backlog * 400 / 1e6
        if mb > self.cfg.disk_budget_mb:
            self.rt.alarms.raise_(Alarm("uplink:backlog", "critical",
                                        f"uplink backlog of {backlog} records (~{mb:.0f} MB) "
                                        f"exceeds its {self.cfg.disk_budget_mb:g} MB budget: "
                                        "nothing is dropped; restore the link to "
                                        f"{self.cfg.broker}"))
        else:
            self.rt.alarms.clear("uplink:backlog")
