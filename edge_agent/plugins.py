"""Loading vendor plugins and calling their hooks one plugin at a time.

pluggy aborts the remaining implementations of a hook when one raises (pluggy#419), so
the core never calls ``pm.hook.X()`` across plugins: :meth:`PluginHost.call_each` calls
each plugin's implementation separately, in a worker thread, under a deadline. A plugin
that raises or hangs is marked *isolated* with the reason, and the others carry on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.metadata
import logging
import os
import re
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from edge_agent import hookspecs
from edge_agent.contract import CONTRACT_VERSION, PluginInfo
from edge_agent.errors import EdgeAgentError, PluginError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "edge_agent.plugins"
ENV_ONLY = "EDGE_AGENT_PLUGINS"
"""Comma-separated plugin names: load only these (handy when debugging a site)."""
# How long the event loop waits, GIL released, for a hook's thread before it awaits it
# (a hook that runs longer costs the loop at most this, once per call).
HOOK_SYNC_WAIT = 0.002


@dataclass
class PluginRecord:
    """What the agent knows about one plugin, loaded or not."""

    name: str
    status: str  # "loaded", "refused", "isolated", "disabled"
    reason: str = ""
    info: PluginInfo | None = None
    source: str = ""  # entry point value or "registered"
    distribution: str = ""
    faults: int = 0
    last_fault: str = ""
    hooks: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "vendor": self.info.vendor if self.info else None,
            "version": self.info.version if self.info else None,
            "contract": self.info.contract if self.info else None,
            "description": self.info.description if self.info else "",
            "source": self.source,
            "distribution": self.distribution,
            "faults": self.faults,
            "last_fault": self.last_fault,
            "hooks": self.hooks,
        }


def _hook_name(exc: Exception) -> str:
    """The hook name in pluggy's validation error (its text also names the module)."""
    found = re.search(r"unknown hook '([^']+)'", str(exc))
    return found.group(1) if found else str(exc)


def contract_compatible(declared: str, core: str = CONTRACT_VERSION) -> str | None:
    """Return ``None`` if a plugin written for ``declared`` can run on ``core``, else why not."""
    try:
        d_major, d_minor = (int(p) for p in declared.split("."))
        c_major, c_minor = (int(p) for p in core.split("."))
    except ValueError:
        return f"declares contract {declared!r}, which is not MAJOR.MINOR"
    if d_major != c_major:
        return (
            f"written for contract {declared}, this agent implements {core} "
            f"(major versions differ: upgrade the plugin or the agent)"
        )
    if d_minor > c_minor:
        return (
            f"written for contract {declared}, newer than this agent's {core}: upgrade edge-agent"
        )
    return None


class PluginHost:
    """Owns the pluggy manager and the per-plugin records."""

    def __init__(self, *, hook_timeout: float = 5.0, disabled: Iterable[str] = ()) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.hook_timeout = hook_timeout
        self._disabled = set(disabled)
        only = os.environ.get(ENV_ONLY, "").strip()
        self._only = {n.strip() for n in only.split(",") if n.strip()} if only else None
        # Hooks run in threads so a hanging hook cannot block the event loop; a hung
        # thread is abandoned (it cannot be killed) and its plugin isolated.
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="plugin-hook"
        )

    # ------------------------------------------------------------------ loading

    def load_entry_points(self) -> None:
        """Load every plugin registered under the ``edge_agent.plugins`` group."""
        eps = sorted(
            importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name
        )
        for ep in eps:
            dist = ep.dist.name if ep.dist is not None else ""
            if ep.name in self.records:
                log.warning("plugin %s: second entry point %s ignored", ep.name, ep.value)
                continue
            if not self._wanted(ep.name, ep.value, dist):
                continue
            try:
                obj = ep.load()
            except Exception as exc:
                self._refuse(
                    ep.name,
                    f"failed to import {ep.value}: {type(exc).__name__}: {exc}",
                    source=ep.value,
                    dist=dist,
                )
                continue
            self.register(obj, ep.name, source=ep.value, dist=dist)

    def _wanted(self, name: str, source: str, dist: str) -> bool:
        if name in self._disabled or (self._only is not None and name not in self._only):
            why = "disabled in site config" if name in self._disabled else f"not in ${ENV_ONLY}"
            self.records[name] = PluginRecord(
                name, "disabled", why, source=source, distribution=dist
            )
            return False
        return True

    def register(
        self, obj: ModuleType | object, name: str, *, source: str = "registered", dist: str = ""
    ) -> PluginRecord:
        """Register one plugin object, validating it fully; refuse it with a reason if bad."""
        if not self._wanted(name, source, dist):
            return self.records[name]
        try:
            self.pm.register(obj, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            return self._refuse(name, f"invalid hook implementation: {exc}", source, dist)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=name)
            return self._refuse(
                name,
                f"unknown hook {_hook_name(exc)!r} (misspelled? see edge_agent/hookspecs.py)",
                source,
                dist,
            )
        impls = self._impls("edge_agent_plugin_info", name)
        if not impls:
            self.pm.unregister(name=name)
            return self._refuse(name, "does not implement edge_agent_plugin_info", source, dist)
        try:
            info = impls[0]()
        except Exception as exc:
            self.pm.unregister(name=name)
            return self._refuse(
                name, f"edge_agent_plugin_info raised {type(exc).__name__}: {exc}", source, dist
            )
        if not isinstance(info, PluginInfo):
            self.pm.unregister(name=name)
            return self._refuse(
                name, f"edge_agent_plugin_info returned {type(info).__name__}, not PluginInfo",
                source, dist,
            )
        why = contract_compatible(info.contract)
        if why:
            self.pm.unregister(name=name)
            rec = self._refuse(name, why, source, dist)
            rec.info = info
            return rec
        hooks = sorted(
            h.name for h in self.pm.get_hookcallers(self.pm.get_plugin(name)) or []
        )
        rec = PluginRecord(name, "loaded", info=info, source=source, distribution=dist,
                           hooks=hooks)
        self.records[name] = rec
        log.info("plugin %s %s loaded (contract %s)", name, info.version, info.contract)
        return rec

    def _refuse(self, name: str, reason: str, source: str, dist: str) -> PluginRecord:
        log.error("plugin %s refused: %s", name, reason)
        rec = PluginRecord(name, "refused", reason, source=source, distribution=dist)
        self.records[name] = rec
        return rec

    def _impls(self, hook: str, plugin: str | None = None) -> list[Callable[..., Any]]:
        caller = getattr(self.pm.hook, hook)
        out = []
        for impl in caller.get_hookimpls():
            if plugin is None or impl.plugin_name == plugin:
                out.append(impl.function)
        return out

    # ------------------------------------------------------------------ calling

    def loaded(self) -> list[str]:
        return [n for n, r in self.records.items() if r.status == "loaded"]

    def isolate(self, name: str, reason: str, *, hard: bool = False) -> None:
        """Record a fault against a plugin.

        A plugin whose hook raised keeps running (its faults are counted and shown); one
        whose hook hung (``hard``) is isolated: no further hooks are called, because each
        hung call holds a worker thread that cannot be reclaimed.
        """
        rec = self.records.get(name)
        if rec is None:
            return
        rec.faults += 1
        rec.last_fault = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {reason}"
        log.error("plugin %s misbehaved: %s", name, reason)
        if hard and rec.status == "loaded":
            rec.status = "isolated"
            rec.reason = reason

    def call_one_sync(self, plugin: str, hook: str, **kwargs: Any) -> Any:
        """Call one plugin's hook in this thread; raise :class:`PluginError` on failure."""
        impls = self._impls(hook, plugin)
        if not impls:
            return None
        fn = impls[0]
        try:
            return fn(**{k: v for k, v in kwargs.items() if k in _argnames(fn)})
        except EdgeAgentError as exc:
            # A deliberate refusal with a reason (bad device settings, say): not a fault.
            raise PluginError(f"plugin {plugin}: {exc}") from exc
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(exc)).strip()
            self.isolate(plugin, f"{hook} raised {detail}")
            raise PluginError(f"plugin {plugin}: {hook} raised {detail}") from exc

    async def call_one(self, plugin: str, hook: str, **kwargs: Any) -> Any:
        """Call one plugin's hook in a worker thread under the hook deadline."""
        rec = self.records.get(plugin)
        if rec is None or rec.status not in ("loaded",):
            raise PluginError(f"plugin {plugin} is not loaded ({rec.status if rec else 'unknown'})")
        started = time.monotonic()
        job = self._pool.submit(lambda: self.call_one_sync(plugin, hook, **kwargs))
        # A hook returns in microseconds (the contract says it must return quickly): the
        # loop waits up to HOOK_SYNC_WAIT for its thread, with the GIL released, and so
        # skips the two thread hand-overs through a busy event loop (each 0.3-2.5 ms on
        # the project's machine class, twice on the way from an mDNS announcement to the
        # device online). A hook still running then is awaited under its deadline.
        with contextlib.suppress(concurrent.futures.TimeoutError):
            return job.result(timeout=HOOK_SYNC_WAIT)
        try:
            async with asyncio.timeout(max(0.0, self.hook_timeout
                                           - (time.monotonic() - started))):
                return await asyncio.wrap_future(job)
        except TimeoutError as exc:
            self.isolate(plugin, f"{hook} hung for more than {self.hook_timeout:g}s", hard=True)
            raise PluginError(f"plugin {plugin}: {hook} did not return in time") from exc

    async def call_each(self, hook: str, **kwargs: Any) -> dict[str, Any]:
        """Call a hook on every loaded plugin, each isolated; return results by plugin."""
        results: dict[str, Any] = {}
        names = [n for n in self.loaded() if self._impls(hook, n)]
        outcomes = await asyncio.gather(
            *(self.call_one(n, hook, **kwargs) for n in names), return_exceptions=True
        )
        for name, out in zip(names, outcomes, strict=True):
            if isinstance(out, BaseException):
                if not isinstance(out, PluginError):
                    self.isolate(name, f"{hook}: {out!r}")
                continue
            if out is not None:
                results[name] = out
        return results

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _argnames(fn: Callable[..., Any]) -> tuple[str, ...]:
    code = getattr(fn, "__code__", None)
    if code is None:
        return ()
    return tuple(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])
