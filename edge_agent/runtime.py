"""What every service of the agent shares: configuration, plugins, the audit log, the
store, the event hub, the agent's alarms and its tasks. The agent (the composition root)
builds one and hands it to discovery, the device registry, commands and views."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from edge_agent.actions import Action
from edge_agent.alarms import AlarmBook
from edge_agent.config import SiteConfig
from edge_agent.events import EventHub
from edge_agent.plugins import PluginHost
from edge_agent.store import AuditLog, AuditRecord, StateStore
from edge_agent.supervisor import Timing

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    config: SiteConfig
    timing: Timing
    plugins: PluginHost
    audit: AuditLog
    store: StateStore
    hub: EventHub = field(default_factory=EventHub)
    alarms: AlarmBook = field(default_factory=AlarmBook)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    plugin_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def settings(self, plugin: str) -> dict[str, Any]:
        """The plugin's site settings, resolved once at start-up."""
        return dict(self.plugin_settings.get(plugin, {}))

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str, *,
              log_errors: bool = True) -> asyncio.Task[Any]:
        """Start a task and keep a reference to it until it ends; log if it dies
        (``log_errors=False``: only of something other than an agent error)."""
        from edge_agent.errors import EdgeAgentError

        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self.tasks.discard(t)
            if t.cancelled() or t.exception() is None:
                return
            exc = t.exception()
            if log_errors or not isinstance(exc, EdgeAgentError):
                log.error("task %s died: %r", name, exc, exc_info=exc)

        task.add_done_callback(done)
        return task

    async def wait_stop(self, seconds: float) -> None:
        """Sleep, waking early when the agent stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def record(self, action: Action, **fields: Any) -> AuditRecord:
        """Append an event to the audit log and wait until it is durable."""
        return await self.audit.append({"action": action, **fields})

    def record_soon(self, action: Action, **fields: Any) -> None:
        """Append an event without waiting (device observations on the poll path)."""
        fut = self.audit.append_nowait({"action": action, **fields}, fail_fast=False)

        def done(f: asyncio.Future[AuditRecord]) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.debug("audit append of %s failed: %s", action, f.exception())

        fut.add_done_callback(done)
