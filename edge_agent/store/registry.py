"""Device registry and latest compartment state, in TinyDB behind an atomic storage.

TinyDB's own ``JSONStorage`` rewrites the file in place and can leave an unparseable or
silently truncated file after a crash (field notes). :class:`AtomicJSONStorage` keeps
the document in memory and replaces the file atomically on ``flush``: write a temporary
file, fsync it, ``os.replace`` it over the old one, fsync the directory. All of it runs
on one store thread, off the event loop, and only when something changed.

The registry is a cache as far as decisions go (out of service, adopt, ignore): the
audit trail is their source of truth, see :mod:`edge_agent.decisions` for the rule.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from tinydb import Query, TinyDB
from tinydb.storages import Storage

from edge_agent.errors import StoreError
from edge_agent.store.durable import atomic_write, private_dir

log = logging.getLogger(__name__)


class CorruptStoreFile(StoreError):
    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class AtomicJSONStorage(Storage):
    """TinyDB storage: reads once, buffers writes, persists atomically on :meth:`flush`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._data: dict[str, Any] | None = None
        self.dirty = False
        if self.path.exists():
            raw = self.path.read_bytes()
            if not raw.strip():
                # Never written empty by us (atomic replace): a power cut on a file system
                # that lost the data but kept the name. Not a fresh start.
                raise CorruptStoreFile(self.path, "is empty")
            try:
                data = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise CorruptStoreFile(self.path, f"does not parse: {exc}") from exc
            if not isinstance(data, dict):
                raise CorruptStoreFile(self.path, "top level is not an object")
            self._data = data

    def read(self) -> dict[str, Any] | None:
        return self._data

    def write(self, data: dict[str, Any]) -> None:
        self._data = data
        self.dirty = True

    def flush(self) -> bool:
        if not self.dirty or self._data is None:
            return False
        # orjson: the registry holds every compartment of every device; the stdlib encoder
        # made this flush a visible share of the agent's CPU on a 220-device site.
        payload = orjson.dumps(self._data, option=orjson.OPT_SORT_KEYS)
        atomic_write(self.path, payload)
        self.dirty = False
        return True

    def close(self) -> None:
        self.flush()


class StateStore:
    """Registry of devices and their latest compartment state.

    Mutations are queued to the store thread and flushed together after a short delay,
    so a burst of changes costs one atomic file replacement.
    """

    FILE = "registry.json"

    def __init__(
        self,
        state_dir: Path,
        *,
        flush_delay: float = 0.2,
        state_flush_delay: float = 5.0,
        on_corrupt: Callable[[Path, Path, str], None] | None = None,
    ) -> None:
        self.path = state_dir / self.FILE
        self.flush_delay = flush_delay
        self.state_flush_delay = state_flush_delay
        self._flush_due = 0.0
        self._sleeping = False
        self._again: float | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="state-store"
        )
        self._db: TinyDB | None = None
        self._storage: AtomicJSONStorage | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._on_corrupt = on_corrupt
        self.moved_aside: Path | None = None
        self.last_error: str | None = None

    def _open_sync(self) -> None:
        private_dir(self.path.parent)
        try:
            self._db = TinyDB(self.path, storage=AtomicJSONStorage)
        except CorruptStoreFile as exc:
            # Never silently reset: keep the bad file for inspection and start clean.
            aside = self.path.with_name(
                f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
            )
            os.replace(self.path, aside)
            self.moved_aside = aside
            log.error("state store %s is corrupt (%s); moved aside to %s", self.path,
                      exc.reason, aside)
            if self._on_corrupt:
                self._on_corrupt(self.path, aside, exc.reason)
            self._db = TinyDB(self.path, storage=AtomicJSONStorage)
        storage = self._db.storage
        assert isinstance(storage, AtomicJSONStorage)
        self._storage = storage

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._open_sync)

    async def _run(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def load(self) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        def read() -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
            assert self._db is not None
            devices = [dict(d) for d in self._db.table("devices").all()]
            comps = {
                d["id"]: list(d["compartments"]) for d in self._db.table("compartments").all()
            }
            return devices, comps

        result: tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]] = await self._run(
            read
        )
        return result

    async def load_ignored(self) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            assert self._db is not None
            return [dict(d) for d in self._db.table("ignored").all()]

        result: list[dict[str, Any]] = await self._run(read)
        return result

    async def load_meta(self, doc_id: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            assert self._db is not None
            found = self._db.table("meta").get(Query().id == doc_id)
            return dict(found) if isinstance(found, dict) else None

        result: dict[str, Any] | None = await self._run(read)
        return result

    def save_meta(self, doc: dict[str, Any]) -> None:
        """Queue a meta document (e.g. the decisions watermark) for the next flush: it is
        written in the same atomic replacement as the changes queued with it."""
        self._pool.submit(self._upsert, "meta", dict(doc))
        self._schedule_flush()

    def save_ignored(self, doc: dict[str, Any]) -> None:
        self._pool.submit(self._upsert, "ignored", dict(doc))
        self._schedule_flush()

    def forget_ignored(self, doc_id: str) -> None:
        """An ignore taken back (the trail's discovery_unignored is the source of truth)."""
        self._pool.submit(self._remove, "ignored", doc_id)
        self._schedule_flush()

    def _remove(self, table: str, doc_id: str) -> None:
        assert self._db is not None
        self._db.table(table).remove(Query().id == doc_id)

    def _upsert(self, table: str, doc: dict[str, Any]) -> None:
        assert self._db is not None
        self._db.table(table).upsert(doc, Query().id == doc["id"])

    def save_device(self, doc: dict[str, Any]) -> None:
        """Queue a device record (keyed by ``doc['id']``) for the next flush."""
        self._pool.submit(self._upsert, "devices", dict(doc))
        self._schedule_flush()

    def save_compartments(self, device_id: str, compartments: list[dict[str, Any]]) -> None:
        self._pool.submit(
            self._upsert, "compartments", {"id": device_id, "compartments": compartments}
        )
        # Last-known door/item state is a convenience for the next start (the devices are
        # re-read anyway, and every change is in the audit log): written at most every few
        # seconds, because each write serialises the whole registry.
        self._schedule_flush(self.state_flush_delay)

    def _schedule_flush(self, delay: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + (self.flush_delay if delay is None else delay)
        pending = self._flush_task is not None and not self._flush_task.done()
        if pending and not self._sleeping:
            # A flush is writing now; this change may have missed it: write again after.
            self._again = due if self._again is None else min(self._again, due)
            return
        if pending and self._flush_due <= due:
            return  # a flush at least as soon is already coming
        if pending and self._flush_task is not None:
            self._flush_task.cancel()  # still sleeping: bring the flush forward
        self._flush_due = due
        self._flush_task = loop.create_task(self._delayed_flush(due))

    async def _delayed_flush(self, due: float) -> None:
        self._sleeping = True
        try:
            await asyncio.sleep(max(0.0, due - asyncio.get_running_loop().time()))
        finally:
            self._sleeping = False
        await self.flush()
        again, self._again = self._again, None
        if again is not None:
            self._flush_due = again
            self._flush_task = asyncio.get_running_loop().create_task(
                self._delayed_flush(again))

    def _flush_sync(self) -> None:
        if self._storage is None:
            return
        try:
            self._storage.flush()
            self.last_error = None
        except OSError as exc:
            # The buffered state is still in memory and dirty: the next flush retries.
            self.last_error = f"cannot write {self.path}: {exc}"
            log.error("%s", self.last_error)

    async def flush(self) -> None:
        await self._run(self._flush_sync)

    async def close(self) -> None:
        if self._flush_task is not None and not self._flush_task.done():
            self._flush_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush_task
        await self.flush()
        self._pool.shutdown(wait=True)
