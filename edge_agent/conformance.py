"""Conformance suite for vendor plugins: point it at your plugin and its simulator.

In your plugin's tests::

    from edge_agent.conformance import ConformanceSuite, Target

    class AcmeTarget(Target):          # drives your simulator; see Target below
        ...

    class TestAcmeConformance(ConformanceSuite):
        plugin = "acme"                # your entry point name

        def make_target(self, workdir):
            return AcmeTarget(workdir)

pytest then runs every check below against a real agent (real Unix socket, real state
directory) that loads your plugin through its installed entry point, exactly as on a
site. Each failure says what to fix. The checks:

``test_plugin_loads``          entry point found, compatible contract, hooks well formed
``test_discovery``             every simulated device found, online, with its compartments
``test_identity_is_stable``    the same identities after an agent restart; no IP or tty in them
``test_state_follows``         a door changed on the simulator shows in the agent (every device)
``test_unlock_round_trip``     an unlock through the API reaches the simulator, audited
                               (every device)
``test_out_of_range``          a compartment the device does not have is refused, unaudited
``test_identify_as_declared``  identify works if the driver declares it, else is refused
``test_jammed_lock``           a lock that does not move is never audited ok (needs
                               ``Target.jam``; skipped where the simulator cannot jam)
``test_garbage_is_contained``  garbage on the wire never escapes as a plugin fault
``test_silence_then_recovery`` a silent device goes offline, and comes back by itself

The checks need no pytest-asyncio: each runs its own event loop.
"""

from __future__ import annotations

import abc
import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

from edge_agent.agent import Agent
from edge_agent.client import AgentClient
from edge_agent.contract import CONTRACT_VERSION
from edge_agent.errors import ClientError
from edge_agent.plugins import contract_compatible
from edge_agent.testing import running_agent, short_tempdir, wait_until

TIMING = ("[agent]\npoll_interval = 0.2\ncommand_timeout = 1.0\noffline_after = 2\n"
          "backoff_initial = 0.1\nbackoff_max = 0.5\nprobe_interval = 2.0\n")


class Target(abc.ABC):
    """Your simulator, as the conformance suite drives it. Implement every method."""

    @abc.abstractmethod
    def start(self) -> None:
        """Start the simulator (ports open, devices answering)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop it and release every port and file."""

    @abc.abstractmethod
    def site_toml(self) -> str:
        """Site config sections (TOML) with which the agent finds the simulated devices:
        ``[[buses]]``, ``[[devices]]`` or ``[discovery.mdns]``, and ``[vendor.NAME]``.
        Do not include ``[site]`` or ``[agent]``: the suite adds them."""

    @abc.abstractmethod
    def expected(self) -> dict[str, int]:
        """Identity of each simulated device -> its number of compartments."""

    @abc.abstractmethod
    def set_door(self, identity: str, compartment: int, is_open: bool) -> None:
        """Open or close a door on the simulator (1-based compartment)."""

    @abc.abstractmethod
    def unlocked(self, identity: str) -> list[int]:
        """Compartments the simulator was told to unlock, in order."""

    @abc.abstractmethod
    def garbage(self, on: bool) -> None:
        """Make the simulator put garbage on the wire (noise, bad checksums, junk bodies)."""

    @abc.abstractmethod
    def silent(self, on: bool) -> None:
        """Make the simulator stop answering (or drop connections)."""

    def jam(self, identity: str, compartment: int, on: bool) -> None:
        """Optional: make that lock not move when told to unlock (the device reports it,
        or its door stays shut). Without it, the jammed-lock check is skipped."""
        raise NotImplementedError


class ConformanceFailure(AssertionError):
    """A conformance check failed; the message says what to fix."""


async def _eventually(pred: Callable[[], Any], timeout: float,
                      fix: str | Callable[[], str]) -> Any:
    """Wait for ``pred``; on timeout fail with ``fix`` (a callable is evaluated then, so
    the message shows the state at the deadline)."""
    try:
        return await wait_until(pred, timeout, interval=0.05)
    except AssertionError:
        raise ConformanceFailure(fix() if callable(fix) else fix) from None


class ConformanceSuite:
    """Subclass as ``Test<Something>``, set ``plugin`` and implement ``make_target``."""

    plugin: ClassVar[str] = ""
    online_timeout: ClassVar[float] = 20.0
    """Seconds a device may take to be found and come online (raise for slow discovery)."""

    def make_target(self, workdir: Path) -> Target:
        raise NotImplementedError("implement make_target(workdir) -> your Target")

    # ------------------------------------------------------------------ harness

    def _run(self, check: Callable[[Agent, AgentClient, Target, Path], Awaitable[None]],
             then: Callable[[Agent, AgentClient, Target, Path], Awaitable[None]] | None = None,
             ) -> None:
        """Start the target and an agent, run ``check``; with ``then``, stop the agent and
        start a new one on the same state directory and run ``then``."""
        if not self.plugin:
            raise ConformanceFailure("set `plugin = \"<entry point name>\"` on your suite")

        async def go() -> None:
            with short_tempdir("ea-conf-") as work:
                target = self.make_target(work)
                await asyncio.to_thread(target.start)
                try:
                    toml = ('[site]\nid = "conformance"\n' + TIMING + "\n"
                            + target.site_toml())
                    for step in (check, then):
                        if step is None:
                            continue
                        async with running_agent(toml, work / "state") as (agent, client):
                            self._loaded(agent)
                            await step(agent, client, target, work)
                finally:
                    await asyncio.to_thread(target.stop)

        asyncio.run(go())

    def _loaded(self, agent: Agent) -> None:
        rec = agent.plugins.records.get(self.plugin)
        if rec is None or rec.status != "loaded":
            why = rec.reason if rec else "no entry point of that name"
            raise ConformanceFailure(
                f"plugin {self.plugin!r} is not loaded: {why}. Check "
                "[project.entry-points.\"edge_agent.plugins\"] in your pyproject.toml and "
                "reinstall (pip install -e .)")

    async def _all_online(self, agent: Agent, target: Target) -> None:
        for ident, n in target.expected().items():
            await self._online(agent, ident, n)

    async def _online(self, agent: Agent, ident: str, n: int) -> None:
        await _eventually(
            lambda: ident in agent.devices, self.online_timeout,
            lambda: f"device {ident} was never discovered. Found: {sorted(agent.devices)}; "
                    f"inbox: {[e['why'] for e in agent.inbox_items()]}. Check your bus "
                    "probe / mDNS matcher and that Candidate.identity is exactly this string.")
        dev = agent.devices[ident]
        await _eventually(
            lambda: dev.link == "online", self.online_timeout,
            lambda: f"device {ident} was found but is {dev.link!r} ({self._reason(dev)}): "
                    "connect() or read_state() fails, see the reason.")
        await _eventually(
            lambda: len(dev.compartments) == n, 5,
            lambda: f"device {ident} reports {len(dev.compartments)} compartments, expected "
                    f"{n}: read_state() must return one CompartmentState per compartment.")

    @staticmethod
    def _reason(dev: Any) -> str:
        return str(dev.supervisor.status.reason if dev.supervisor else dev.error)

    def _faults(self, agent: Agent) -> int:
        rec = agent.plugins.records[self.plugin]
        return rec.faults

    # ------------------------------------------------------------------ checks

    def test_plugin_loads(self) -> None:
        async def check(agent: Agent, client: AgentClient, target: Target, _: Path) -> None:
            rec = agent.plugins.records[self.plugin]
            assert rec.info is not None
            why = contract_compatible(rec.info.contract)
            if why:
                raise ConformanceFailure(f"{why}; declare contract=\"{CONTRACT_VERSION}\"")
            if rec.info.name != self.plugin:
                raise ConformanceFailure(f"PluginInfo.name is {rec.info.name!r} but the entry "
                                         f"point is {self.plugin!r}: make them the same")
            listed = {p["name"]: p for p in await client.get("/v1/plugins")}
            if listed.get(self.plugin, {}).get("status") != "loaded":
                raise ConformanceFailure(f"edge-agent plugins does not list {self.plugin} "
                                         f"as loaded: {listed.get(self.plugin)}")
            schema = await agent.plugins.call_one(self.plugin, "edge_agent_settings_schema")
            for key, spec in (schema or {}).items():
                ok = (isinstance(spec, tuple) and len(spec) in (3, 4)
                      and isinstance(spec[0], type)
                      and isinstance(spec[2], str))
                if not ok:
                    raise ConformanceFailure(
                        f"settings_schema[{key!r}] must be (type, default, help), got {spec!r}")
        self._run(check)

    def test_discovery(self) -> None:
        async def check(agent: Agent, client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(agent, target)
            for ident in target.expected():
                d = await client.get(f"/v1/devices/{ident}")
                if d["plugin"] != self.plugin:
                    raise ConformanceFailure(f"{ident}: Candidate.plugin is {d['plugin']!r}, "
                                             f"must be {self.plugin!r}")
                if not (d.get("info") or {}).get("model"):
                    raise ConformanceFailure(f"{ident}: connect() returned DeviceInfo "
                                             "without a model; technicians need it")
        self._run(check)

    def test_identity_is_stable(self) -> None:
        seen: list[set[str]] = []

        async def first(agent: Agent, client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(agent, target)
            ids = {i for i, d in agent.devices.items() if d.candidate.plugin == self.plugin}
            for ident in ids:
                if re.search(r"\d+\.\d+\.\d+\.\d+|/dev/|/tmp/|tty|pts", ident):
                    raise ConformanceFailure(
                        f"identity {ident!r} contains an address or port name: use the "
                        "vendor plus serial number (or bus id plus board address), so a new "
                        "IP or a renamed port keeps the same device")
            seen.append(ids)

        async def second(agent: Agent, client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(agent, target)
            ids = {i for i, d in agent.devices.items() if d.candidate.plugin == self.plugin}
            if ids != seen[0]:
                raise ConformanceFailure(f"identities changed across a restart: {seen[0]} "
                                         f"then {ids}; derive them from the hardware only")

        self._run(first, then=second)

    def test_state_follows(self) -> None:
        async def check(agent: Agent, client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(agent, target)
            for ident in target.expected():  # every device, not only the first
                dev = agent.devices[ident]
                for want in (True, False):
                    await asyncio.to_thread(target.set_door, ident, 1, want)
                    await self._door_is(dev, ident, "open" if want else "closed")
        self._run(check)

    @staticmethod
    async def _door_is(dev: Any, ident: str, state: str) -> None:
        def shown() -> Any:
            return dev.compartments[0]["door"] if dev.compartments else None

        await _eventually(
            lambda: shown() == state, 5,
            lambda: f"{ident}: the simulator's compartment 1 door is {state} but the agent "
                    f"shows {shown()}: read_state() must report the door of each compartment "
                    "(index 1-based)")

    def test_unlock_round_trip(self) -> None:
        async def check(agent: Agent, client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(agent, target)
            for ident, n in target.expected().items():  # every device
                comp = min(2, n)
                before = len(target.unlocked(ident))
                r = await client.post(f"/v1/devices/{ident}/unlock",
                                      {"compartment": comp, "reason": "conformance"})
                got = target.unlocked(ident)[before:]
                if got != [comp]:
                    raise ConformanceFailure(
                        f"{ident}: unlock of compartment {comp} reached the simulator as "
                        f"{got}: unlock(compartment) must release exactly that one (1-based)")
                events = await client.get("/v1/events", action="unlock", device=ident)
                if not events or events[-1].get("outcome") != "ok" or "audit_seq" not in r:
                    raise ConformanceFailure(f"{ident}: the unlock was not audited as ok")
        self._run(check)

    def test_out_of_range(self) -> None:
        async def check(agent: Agent, client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(agent, target)
            ident, n = next(iter(target.expected().items()))
            before = len(target.unlocked(ident))
            try:
                await client.post(f"/v1/devices/{ident}/unlock",
                                  {"compartment": n + 1, "reason": "conformance"})
                code: str | None = "accepted"
            except ClientError as exc:
                code = exc.code
            asked = await client.get("/v1/events", action="unlock_requested", device=ident,
                                     compartment=n + 1)
            if code != "no_such_compartment" or asked or target.unlocked(ident)[before:]:
                raise ConformanceFailure(
                    f"{ident}: an unlock of compartment {n + 1} of {n} gave {code!r}: "
                    "read_state() must report exactly the device's compartments, so the core "
                    "can refuse the others before anything is audited or sent")
        self._run(check)

    def test_identify_as_declared(self) -> None:
        async def check(agent: Agent, client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(agent, target)
            ident = next(iter(target.expected()))
            dev = await client.get(f"/v1/devices/{ident}")
            declared = "identify" in dev.get("capabilities", [])
            try:
                await client.post(f"/v1/devices/{ident}/identify", {})
                code: str | None = None
            except ClientError as exc:
                code = exc.code
            if declared and code is not None:
                raise ConformanceFailure(
                    f"{ident}: the driver declares identify but it failed ({code}): make "
                    "identify() work, or leave 'identify' out of the driver's capabilities")
            if not declared and code != "unsupported":
                raise ConformanceFailure(
                    f"{ident}: identify is not among the driver's capabilities but did not "
                    f"answer unsupported ({code})")
        self._run(check)

    def test_jammed_lock(self) -> None:
        async def check(agent: Agent, client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(agent, target)
            ident = next(iter(target.expected()))
            try:
                await asyncio.to_thread(target.jam, ident, 2, True)
            except NotImplementedError:
                import pytest

                pytest.skip("Target.jam is not implemented: the suite cannot check that a "
                            "lock which does not move is never audited ok")
            try:
                try:
                    await client.post(f"/v1/devices/{ident}/unlock",
                                      {"compartment": 2, "reason": "conformance jam"})
                    code: str | None = "ok"
                except ClientError as exc:
                    code = exc.code
            finally:
                await asyncio.to_thread(target.jam, ident, 2, False)
            events = await client.get("/v1/events", action="unlock", device=ident,
                                      compartment=2)
            outcome = events[-1]["outcome"] if events else None
            if code not in ("lock_jammed", "door_did_not_open") or outcome != code:
                raise ConformanceFailure(
                    f"{ident}: a jammed lock answered {code!r} and was audited {outcome!r}: "
                    "raise edge_agent.errors.LockJammed when the device reports it, or set "
                    "door_opens_on_unlock = True on a driver whose doors pop open so the "
                    "core sees the door stay shut")
        self._run(check)

    def test_garbage_is_contained(self) -> None:
        async def check(agent: Agent, client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(agent, target)
            faults = self._faults(agent)
            await asyncio.to_thread(target.garbage, True)
            await asyncio.sleep(2.0)
            await client.get("/v1/status")  # the agent still answers
            await asyncio.to_thread(target.garbage, False)
            if self._faults(agent) != faults:
                rec = agent.plugins.records[self.plugin]
                raise ConformanceFailure(
                    f"garbage on the wire raised out of your driver: {rec.last_fault}. "
                    "Decoders must drop bad bytes and drivers raise only "
                    "edge_agent.errors.DriverError subclasses (ProtocolError, DeviceTimeout)")
            await self._all_online(agent, target)
        self._run(check)

    def test_silence_then_recovery(self) -> None:
        async def check(agent: Agent, client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(agent, target)
            ident = next(iter(target.expected()))
            dev = agent.devices[ident]
            await asyncio.to_thread(target.silent, True)
            try:
                await _eventually(lambda: dev.link == "offline", 15,
                                  lambda: f"{ident} stayed {dev.link!r} while the simulator was "
                                  "silent: read_state() must raise DeviceTimeout (or "
                                  "TransportError) when the device does not answer")
            finally:
                await asyncio.to_thread(target.silent, False)
            await _eventually(lambda: dev.link == "online", 15,
                              lambda: f"{ident} did not come back after the simulator answered "
                              f"again ({dev.link}: {self._reason(dev)}): close() must release "
                              "the connection so connect() can open a new one")
        self._run(check)
