"""Commands that move equipment or change what may move: unlock, identify, out of
service. Each is wrapped in its audit records the same way:

1. refused before anything is sent unless its outcome can be recorded (the audit log
   writable and its reserve held) — a truthful refusal, nothing moved;
2. the request record is durable before the hardware is told;
3. from then on the command runs to its end even if the caller goes away, its outcome is
   recorded whatever happens (in the reserved space if the disk fills meanwhile, in
   memory if even that is gone), and the answer says what the hardware was told.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from edge_agent.actions import Action
from edge_agent.contract import driver_capabilities
from edge_agent.devices import DeviceRegistry, comp_json
from edge_agent.errors import (
    DeviceTimeout,
    DeviceUnavailable,
    DoorDidNotOpen,
    EdgeAgentError,
    NoSuchCompartment,
    StoreUnavailable,
    Unsupported,
    failure_kind,
)
from edge_agent.runtime import Runtime
from edge_agent.store import AuditRecord
from edge_agent.supervisor import DeviceSupervisor

log = logging.getLogger(__name__)
COMMAND_TASK = "command:"  # name prefix of a command's task once its request is on disk


def _comp(state: Any, compartment: int) -> dict[str, Any] | None:
    return next((comp_json(c) for c in state.compartments if c.index == compartment), None)


def _in_range(device_id: str, compartments: list[dict[str, Any]], compartment: int) -> None:
    """Refuse a compartment the device does not have, before anything is audited."""
    indices = sorted(c["index"] for c in compartments)
    if indices and compartment not in indices:
        span = (f"{indices[0]}-{indices[-1]}" if indices == list(range(indices[0],
                                                                       indices[-1] + 1))
                else ", ".join(map(str, indices)))
        raise NoSuchCompartment(f"{device_id} has no compartment {compartment}: its "
                                f"compartments are {span}")


def _pending(rec: AuditRecord) -> dict[str, Any]:
    """What an answer says when its outcome record waits in memory for the disk."""
    if not rec.get("pending"):
        return {}
    return {"audit_pending": f"the outcome is kept in memory and written when the disk "
                             f"takes writes again ({rec.get('error')})"}


class Commands:
    def __init__(self, rt: Runtime, registry: DeviceRegistry) -> None:
        self.rt = rt
        self.registry = registry

    def _refuse_if_unrecordable(self) -> None:
        why = self.rt.audit.command_refusal()
        if why is not None:
            raise StoreUnavailable(why)

    async def _sent(self, coro: Coroutine[Any, Any, Any], name: str) -> Any:
        """Run the part of a command after its request is on disk: the hardware call
        and the outcome record. It runs to the end even if the caller goes away."""
        task = self.rt.spawn(coro, COMMAND_TASK + name, log_errors=False)
        return await asyncio.shield(task)

    async def drain(self) -> None:
        """At stop: commands already sent finish and record their outcome first."""
        running = [t for t in self.rt.tasks if t.get_name().startswith(COMMAND_TASK)]
        if running:
            await asyncio.wait(running, timeout=self.rt.timing.call_timeout + 5)

    # ------------------------------------------------------------------ unlock

    async def unlock(self, device_id: str, compartment: int, *, actor: str, reason: str
                     ) -> dict[str, Any]:
        """Unlock one compartment (see the module's rules)."""
        dev = self.registry.device(device_id)
        if dev.supervisor is None:
            raise DeviceUnavailable(_not_supervised(dev))
        self._refuse_if_unrecordable()
        _in_range(dev.id, dev.compartments, compartment)
        oos = dev.out_of_service.get(str(compartment))
        if oos:
            raise DeviceUnavailable(f"compartment {compartment} of {device_id} is out of "
                                    f"service ({oos['reason']}, by {oos['actor']})")
        fields = {"device": device_id, "compartment": compartment, "actor": actor,
                  "reason": reason}
        request = await self.rt.record(Action.UNLOCK_REQUESTED, **fields)
        return dict(await self._sent(self._unlock_sent(dev.supervisor, request["seq"], fields),
                                     f"unlock:{device_id}:{compartment}"))

    async def _unlock_sent(self, sup: DeviceSupervisor, request_seq: int,
                           fields: dict[str, Any]) -> dict[str, Any]:
        compartment = fields["compartment"]
        try:
            state = await sup.unlock(compartment)
            comp = _comp(state, compartment)
            if comp is not None and comp["door"] == "closed" \
                    and getattr(sup.driver, "door_opens_on_unlock", False):
                comp = await self._settle(sup, compartment)
        except EdgeAgentError as exc:
            # A timeout means the board may have acted: "unknown", never "refused".
            unknown = isinstance(exc, DeviceTimeout)
            rec = await self.rt.audit.append_outcome({
                "action": Action.UNLOCK, "outcome": "unknown" if unknown else failure_kind(exc),
                "details": {"error": str(exc), "request_seq": request_seq}, **fields})
            if unknown:
                raise DeviceTimeout(f"{exc}: the unlock was sent and the board did not "
                                    f"answer; the door may have opened (audit #"
                                    f"{rec.get('seq') or 'pending'}, outcome unknown)") from exc
            raise
        done = await self.rt.audit.append_outcome({
            "action": Action.UNLOCK, "outcome": "ok",
            "details": {"request_seq": request_seq, "compartment_state": comp}, **fields})
        return {"device": fields["device"], "compartment": compartment, "state": comp,
                "audit_seq": done.get("seq"), **_pending(done)}

    async def _settle(self, sup: DeviceSupervisor, compartment: int) -> dict[str, Any]:
        """An accepted unlock whose door still reads closed: read again until it opens
        or the settle time is over (then it is door_did_not_open, never "ok")."""
        settle = self.rt.config.agent.unlock_settle
        deadline = asyncio.get_running_loop().time() + settle
        while True:
            await asyncio.sleep(min(0.1, settle))
            comp = _comp(await sup.refresh(), compartment)
            if comp is None or comp["door"] != "closed":
                return comp or {}
            if asyncio.get_running_loop().time() >= deadline:
                raise DoorDidNotOpen(f"the board accepted the unlock of compartment "
                                     f"{compartment} but its door still reads closed after "
                                     f"{settle:g}s (jammed, blocked, or wired wrong)")

    # ------------------------------------------------------------------ identify

    async def identify(self, device_id: str, *, actor: str) -> dict[str, Any]:
        dev = self.registry.device(device_id)
        if dev.supervisor is None:
            raise DeviceUnavailable(_not_supervised(dev))
        if "identify" not in driver_capabilities(dev.supervisor.driver):
            raise Unsupported(f"{device_id} ({dev.candidate.model}) has no identify "
                              "indicator")
        self._refuse_if_unrecordable()
        return dict(await self._sent(self._identify_sent(dev.supervisor, device_id, actor),
                                     f"identify:{device_id}"))

    async def _identify_sent(self, sup: DeviceSupervisor, device_id: str, actor: str
                             ) -> dict[str, Any]:
        try:
            await sup.identify()
        except EdgeAgentError as exc:
            await self.rt.audit.append_outcome({"action": Action.IDENTIFY,
                                                "device": device_id, "actor": actor,
                                                "outcome": "failed",
                                                "details": {"error": str(exc)}})
            raise
        rec = await self.rt.audit.append_outcome({"action": Action.IDENTIFY,
                                                  "device": device_id, "actor": actor})
        return {"ok": True, "audit_seq": rec.get("seq"), **_pending(rec)}

    # ------------------------------------------------------------------ out of service

    async def set_out_of_service(self, device_id: str, compartment: int, *, actor: str,
                                 reason: str, out: bool) -> dict[str, Any]:
        """Take a compartment out of service (unlocks refused) or put it back. A
        decision: durable in the trail before the answer (see edge_agent.decisions)."""
        dev = self.registry.device(device_id)
        _in_range(device_id, dev.compartments, compartment)
        rec = await self.rt.record(Action.OUT_OF_SERVICE if out else Action.BACK_IN_SERVICE,
                                   device=device_id, compartment=compartment, actor=actor,
                                   reason=reason)
        # The agent refuses unlocks of the compartment whatever happens next; a device
        # that keeps its own out-of-service flag (a REST gateway) is told as well.
        pushed: bool | str = False
        if dev.supervisor is not None:
            try:
                pushed = await dev.supervisor.set_out_of_service(compartment, out, reason)
            except EdgeAgentError as exc:
                pushed = f"not applied on the device: {exc}"
                log.warning("device %s compartment %s: out of service %s", device_id,
                            compartment, pushed)
                self.rt.record_soon(Action.OUT_OF_SERVICE_PUSH, device=device_id,
                                    compartment=compartment, outcome="failed",
                                    details={"error": str(exc), "request_seq": rec["seq"]})
        if out:
            dev.out_of_service[str(compartment)] = {"reason": reason, "actor": actor,
                                                    "since": time.time(), "seq": rec["seq"]}
        else:
            dev.out_of_service.pop(str(compartment), None)
        self.rt.store.save_device(dev.registry_doc())
        self.registry.save_watermark(rec["seq"])
        self.registry.changed(dev)
        return {"device": device_id, "compartment": compartment, "out_of_service": out,
                "audit_seq": rec["seq"], "device_told": pushed}


def _not_supervised(dev: Any) -> str:
    """Why commands cannot reach a device the agent knows but does not drive, and what
    to do about it."""
    if dev.link == "discovered":
        return (f"device {dev.id} is waiting in the inbox, not adopted: compare it with "
                f"its label ('edge-agent inbox'), then 'edge-agent adopt {dev.id} "
                "--reason …'")
    if dev.link == "ignored":
        return (f"device {dev.id} is ignored: 'edge-agent unignore {dev.id} --reason …' "
                "puts it back in the inbox for adoption")
    return f"device {dev.id} is {dev.link}, not supervised"
