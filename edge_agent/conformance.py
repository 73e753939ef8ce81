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
``test_unsolicited_frames``    frames nobody asked for, put between each request and its
                               reply, change nothing: state, unlocks, audit stay right
                               (needs ``Target.interleave``)
``test_decoder_never_returns_a_stale_frame``  a broken frame followed by a good one
                               gives the good one only, never bytes of the broken one
                               (needs ``Target.codec``)
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

from edge_agent.api import schema
from edge_agent.client import AgentClient
from edge_agent.contract import CONTRACT_VERSION, FrameDecoder
from edge_agent.errors import ClientError
from edge_agent.plugins import PluginHost, contract_compatible
from edge_agent.testing import adopt, running_agent, short_tempdir, wait_device

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

    def interleave(self, on: bool) -> None:
        """Optional: make the simulator put a frame nobody asked for on the wire just
        before each reply (what a device reports on its own, or the frame of another
        device on a shared bus). Without it, the unsolicited-frames check is skipped."""
        raise NotImplementedError

    def codec(self) -> tuple[Callable[[], FrameDecoder], list[bytes]]:
        """Optional: a factory of your plugin's :class:`FrameDecoder` and whole, valid
        frames the device sends (replies; give a few dozen different ones). Without it,
        the stale-frame check of the decoder is skipped."""
        raise NotImplementedError


class ConformanceFailure(AssertionError):
    """A conformance check failed; the message says what to fix."""


class ConformanceSuite:
    """Subclass as ``Test<Something>``, set ``plugin`` and implement ``make_target``."""

    plugin: ClassVar[str] = ""
    online_timeout: ClassVar[float] = 20.0
    """Seconds a device may take to be found and come online (raise for slow discovery)."""

    def make_target(self, workdir: Path) -> Target:
        raise NotImplementedError("implement make_target(workdir) -> your Target")

    # ------------------------------------------------------------------ harness

    def _run(self, check: Callable[[AgentClient, Target, Path], Awaitable[None]],
             then: Callable[[AgentClient, Target, Path], Awaitable[None]] | None = None,
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
                        async with running_agent(toml, work / "state") as (_agent, client):
                            # From here on the suite sees the agent only as a site's
                            # users do: through its socket API.
                            await self._loaded(client)
                            await step(client, target, work)
                finally:
                    await asyncio.to_thread(target.stop)

        asyncio.run(go())

    async def _plugin(self, client: AgentClient) -> schema.Plugin | None:
        plugins: list[schema.Plugin] = await client.call("plugins")
        return next((p for p in plugins if p["name"] == self.plugin), None)

    async def _loaded(self, client: AgentClient) -> None:
        rec = await self._plugin(client)
        if rec is None or rec["status"] != "loaded":
            why = rec["reason"] if rec else "no entry point of that name"
            raise ConformanceFailure(
                f"plugin {self.plugin!r} is not loaded: {why}. Check "
                "[project.entry-points.\"edge_agent.plugins\"] in your pyproject.toml and "
                "reinstall (pip install -e .)")

    async def _all_online(self, client: AgentClient, target: Target) -> None:
        for ident, n in target.expected().items():
            await self._online(client, ident, n)

    async def _online(self, client: AgentClient, ident: str, n: int) -> None:
        async def found() -> Any:
            try:
                return await wait_device(client, ident, lambda d: True,
                                         timeout=self.online_timeout)
            except AssertionError:
                devices: list[schema.Device] = await client.call("devices")
                inbox: list[schema.InboxItem] = await client.call("inbox")
                raise ConformanceFailure(
                    f"device {ident} was never discovered. Found: "
                    f"{sorted(d['id'] for d in devices)}; inbox: {[e['why'] for e in inbox]}. "
                    "Check your bus probe / mDNS matcher and that Candidate.identity is "
                    "exactly this string.") from None

        dev = await found()
        if not dev["adopted"] and not dev["ignored"]:
            # Not covered by auto_adopt (an armoury device never is): a technician
            # compares what it presents with its label and adopts it (contract 1.4).
            try:
                await adopt(client, ident, reason="conformance: label checked",
                            timeout=self.online_timeout)
            except (AssertionError, ClientError) as exc:
                raise ConformanceFailure(
                    f"device {ident} waits in the inbox and cannot be adopted: {exc}. "
                    "Adoption connects a driver without pins and pins what connect() "
                    "returns (DeviceInfo.serial, .fingerprint)") from None
        try:
            await wait_device(client, ident, timeout=self.online_timeout)
        except AssertionError:
            d: schema.Device = await client.call("device", id=ident)
            raise ConformanceFailure(
                f"device {ident} was found but is {d['link']!r} "
                f"({d.get('reason') or d['error']}): connect() or read_state() fails, see "
                "the reason.") from None
        try:
            await wait_device(client, ident, lambda d: len(d["compartments"]) == n, timeout=5)
        except AssertionError:
            d = await client.call("device", id=ident)
            raise ConformanceFailure(
                f"device {ident} reports {len(d['compartments'])} compartments, expected "
                f"{n}: read_state() must return one CompartmentState per compartment."
            ) from None

    async def _faults(self, client: AgentClient) -> int:
        rec = await self._plugin(client)
        return rec["faults"] if rec else 0

    async def _ours(self, client: AgentClient) -> set[str]:
        devices: list[schema.Device] = await client.call("devices")
        return {d["id"] for d in devices if d["plugin"] == self.plugin}

    # ------------------------------------------------------------------ checks

    def test_plugin_loads(self) -> None:
        async def check(client: AgentClient, target: Target, _: Path) -> None:
            rec = await self._plugin(client)
            assert rec is not None
            why = contract_compatible(rec["contract"] or "")
            if why:
                raise ConformanceFailure(f"{why}; declare contract=\"{CONTRACT_VERSION}\"")
            # The plugin as a fresh install sees it: its own info and settings schema.
            host = PluginHost()
            host.load_entry_points()
            try:
                info = host.call_one_sync(self.plugin, "edge_agent_plugin_info")
                settings = host.call_one_sync(self.plugin, "edge_agent_settings_schema")
            finally:
                host.shutdown()
            if info.name != self.plugin:
                raise ConformanceFailure(f"PluginInfo.name is {info.name!r} but the entry "
                                         f"point is {self.plugin!r}: make them the same")
            for key, spec in (settings or {}).items():
                ok = (isinstance(spec, tuple) and len(spec) in (3, 4)
                      and isinstance(spec[0], type)
                      and isinstance(spec[2], str))
                if not ok:
                    raise ConformanceFailure(
                        f"settings_schema[{key!r}] must be (type, default, help), got {spec!r}")
        self._run(check)

    def test_discovery(self) -> None:
        async def check(client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(client, target)
            for ident in target.expected():
                d: schema.Device = await client.call("device", id=ident)
                if d["plugin"] != self.plugin:
                    raise ConformanceFailure(f"{ident}: Candidate.plugin is {d['plugin']!r}, "
                                             f"must be {self.plugin!r}")
                if not (d.get("info") or {}).get("model"):
                    raise ConformanceFailure(f"{ident}: connect() returned DeviceInfo "
                                             "without a model; technicians need it")
        self._run(check)

    def test_identity_is_stable(self) -> None:
        seen: list[set[str]] = []

        async def first(client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(client, target)
            ids = await self._ours(client)
            for ident in ids:
                if re.search(r"\d+\.\d+\.\d+\.\d+|/dev/|/tmp/|tty|pts", ident):
                    raise ConformanceFailure(
                        f"identity {ident!r} contains an address or port name: use the "
                        "vendor plus serial number (or bus id plus board address), so a new "
                        "IP or a renamed port keeps the same device")
            seen.append(ids)

        async def second(client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(client, target)
            ids = await self._ours(client)
            if ids != seen[0]:
                raise ConformanceFailure(f"identities changed across a restart: {seen[0]} "
                                         f"then {ids}; derive them from the hardware only")

        self._run(first, then=second)

    def test_state_follows(self) -> None:
        async def check(client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(client, target)
            for ident in target.expected():  # every device, not only the first
                for want in (True, False):
                    await asyncio.to_thread(target.set_door, ident, 1, want)
                    await self._door_is(client, ident, "open" if want else "closed")
        self._run(check)

    @staticmethod
    async def _door_is(client: AgentClient, ident: str, state: str,
                       compartment: int = 1) -> None:
        try:
            await wait_device(client, ident, lambda d: len(d["compartments"]) >= compartment
                              and d["compartments"][compartment - 1]["door"] == state,
                              timeout=5)
        except AssertionError:
            d: schema.Device = await client.call("device", id=ident)
            shown = (d["compartments"][compartment - 1]["door"]
                     if len(d["compartments"]) >= compartment else None)
            raise ConformanceFailure(
                f"{ident}: the simulator's compartment {compartment} door is {state} but the "
                f"agent shows {shown}: read_state() must report the door of each "
                "compartment (index 1-based)") from None

    def test_unlock_round_trip(self) -> None:
        async def check(client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(client, target)
            for ident, n in target.expected().items():  # every device
                comp = min(2, n)
                before = len(target.unlocked(ident))
                r = await client.call("unlock", id=ident,
                                      body={"compartment": comp, "reason": "conformance"})
                got = target.unlocked(ident)[before:]
                if got != [comp]:
                    raise ConformanceFailure(
                        f"{ident}: unlock of compartment {comp} reached the simulator as "
                        f"{got}: unlock(compartment) must release exactly that one (1-based)")
                events = await client.call("events", action="unlock", device=ident)
                if not events or events[-1].get("outcome") != "ok" or "audit_seq" not in r:
                    raise ConformanceFailure(f"{ident}: the unlock was not audited as ok")
        self._run(check)

    def test_out_of_range(self) -> None:
        async def check(client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(client, target)
            ident, n = next(iter(target.expected().items()))
            before = len(target.unlocked(ident))
            try:
                await client.call("unlock", id=ident,
                                  body={"compartment": n + 1, "reason": "conformance"})
                code: str | None = "accepted"
            except ClientError as exc:
                code = exc.code
            asked = await client.call("events", action="unlock_requested", device=ident,
                                      compartment=n + 1)
            if code != "no_such_compartment" or asked or target.unlocked(ident)[before:]:
                raise ConformanceFailure(
                    f"{ident}: an unlock of compartment {n + 1} of {n} gave {code!r}: "
                    "read_state() must report exactly the device's compartments, so the core "
                    "can refuse the others before anything is audited or sent")
        self._run(check)

    def test_identify_as_declared(self) -> None:
        async def check(client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(client, target)
            ident = next(iter(target.expected()))
            dev: schema.Device = await client.call("device", id=ident)
            declared = "identify" in dev["capabilities"]
            try:
                await client.call("identify", id=ident, body={})
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
        async def check(client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(client, target)
            ident = next(iter(target.expected()))
            try:
                await asyncio.to_thread(target.jam, ident, 2, True)
            except NotImplementedError:
                import pytest

                pytest.skip("Target.jam is not implemented: the suite cannot check that a "
                            "lock which does not move is never audited ok")
            try:
                try:
                    await client.call("unlock", id=ident,
                                      body={"compartment": 2, "reason": "conformance jam"})
                    code: str | None = "ok"
                except ClientError as exc:
                    code = exc.code
            finally:
                await asyncio.to_thread(target.jam, ident, 2, False)
            events = await client.call("events", action="unlock", device=ident,
                                       compartment=2)
            outcome = events[-1]["outcome"] if events else None
            if code not in ("lock_jammed", "door_did_not_open") or outcome != code:
                raise ConformanceFailure(
                    f"{ident}: a jammed lock answered {code!r} and was audited {outcome!r}: "
                    "raise edge_agent.errors.LockJammed when the device reports it, or set "
                    "door_opens_on_unlock = True on a driver whose doors pop open so the "
                    "core sees the door stay shut")
        self._run(check)

    def test_unsolicited_frames(self) -> None:
        async def check(client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(client, target)
            faults = await self._faults(client)
            try:
                await asyncio.to_thread(target.interleave, True)
            except NotImplementedError:
                import pytest

                pytest.skip("Target.interleave is not implemented: the suite cannot put "
                            "unsolicited frames between a request and its reply")
            try:
                for ident, n in target.expected().items():
                    for want in ("open", "closed"):
                        await asyncio.to_thread(target.set_door, ident, 1, want == "open")
                        await self._door_is(client, ident, want)
                    comp = min(2, n)
                    before = len(target.unlocked(ident))
                    try:
                        await client.call("unlock", id=ident, body={
                            "compartment": comp, "reason": "conformance unsolicited"})
                    except ClientError as exc:
                        raise ConformanceFailure(
                            f"{ident}: with a frame nobody asked for before each reply, an "
                            f"unlock failed ({exc}): match replies to their request (address"
                            ", command) and leave other frames to BusLink.listen") from None
                    got = target.unlocked(ident)[before:]
                    if got != [comp]:
                        raise ConformanceFailure(
                            f"{ident}: with unsolicited frames on the wire, an unlock of "
                            f"compartment {comp} reached the simulator as {got}")
                    await asyncio.sleep(0.5)
                    d: schema.Device = await client.call("device", id=ident)
                    if d["link"] != "online":
                        raise ConformanceFailure(
                            f"{ident} is {d['link']} ({d.get('reason')}) with unsolicited "
                            "frames on the wire: a frame that is not the reply must not "
                            "fail the exchange")
            finally:
                await asyncio.to_thread(target.interleave, False)
            if await self._faults(client) != faults:
                rec = await self._plugin(client)
                raise ConformanceFailure(
                    "an unsolicited frame raised out of your driver: "
                    f"{rec['last_fault'] if rec else '?'}")
        self._run(check)

    def test_decoder_never_returns_a_stale_frame(self) -> None:
        """No agent needed: the decoder alone, fed as the bus feeds it. A reply cut short
        (a timeout, a glitch) followed by the next good reply must give that good reply
        and nothing else: a decoder that keeps the broken bytes can glue them to the next
        frame's and return a frame with the old reading, once in 256 with an 8-bit sum."""
        with short_tempdir("ea-conf-") as work:
            target = self.make_target(work)
            try:
                factory, frames = target.codec()
            except NotImplementedError:
                import pytest

                pytest.skip("Target.codec is not implemented: the suite cannot check the "
                            "decoder for stale frames")
        alone = [factory().feed(f) for f in frames]
        for f, got in zip(frames, alone, strict=True):
            if len(got) != 1:
                raise ConformanceFailure(f"feed({f.hex(' ')}) gave {len(got)} frames: "
                                         "Target.codec must give whole, valid frames")
        for i, broken in enumerate(frames):
            for j, good in enumerate(frames):
                if i == j:
                    continue
                for cut in range(1, len(broken)):
                    decoder = factory()
                    early = decoder.feed(broken[:cut])
                    reset = getattr(decoder, "reset", None)
                    if callable(reset):
                        reset()  # what the bus does before each request (contract 1.2)
                    got = early + decoder.feed(good) + decoder.feed(b"")
                    if got != alone[j]:
                        raise ConformanceFailure(
                            f"the decoder fed {broken[:cut].hex(' ')} (a frame cut short) "
                            f"then {good.hex(' ')} returned {got!r}, not {alone[j]!r}: give "
                            "it a reset() that drops any partial frame (the bus calls it "
                            "before each request, contract 1.2)")

    def test_garbage_is_contained(self) -> None:
        async def check(client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(client, target)
            faults = await self._faults(client)
            await asyncio.to_thread(target.garbage, True)
            await asyncio.sleep(2.0)
            await client.call("status")  # the agent still answers
            await asyncio.to_thread(target.garbage, False)
            if await self._faults(client) != faults:
                rec = await self._plugin(client)
                raise ConformanceFailure(
                    f"garbage on the wire raised out of your driver: "
                    f"{rec['last_fault'] if rec else '?'}. "
                    "Decoders must drop bad bytes and drivers raise only "
                    "edge_agent.errors.DriverError subclasses (ProtocolError, DeviceTimeout)")
            await self._all_online(client, target)
        self._run(check)

    def test_silence_then_recovery(self) -> None:
        async def check(client: AgentClient, target: Target, _: Path) -> None:
            await self._all_online(client, target)
            ident = next(iter(target.expected()))
            await asyncio.to_thread(target.silent, True)
            try:
                await wait_device(client, ident, lambda d: d["link"] == "offline", timeout=15)
            except AssertionError:
                d: schema.Device = await client.call("device", id=ident)
                raise ConformanceFailure(
                    f"{ident} stayed {d['link']!r} while the simulator was silent: "
                    "read_state() must raise DeviceTimeout (or TransportError) when the "
                    "device does not answer") from None
            finally:
                await asyncio.to_thread(target.silent, False)
            try:
                await wait_device(client, ident, timeout=15)
            except AssertionError:
                d = await client.call("device", id=ident)
                raise ConformanceFailure(
                    f"{ident} did not come back after the simulator answered again "
                    f"({d['link']}: {d.get('reason') or d['error']}): close() must release "
                    "the connection so connect() can open a new one") from None
        self._run(check)
