"""Async driver for one KR-CU16 board on a bus owned by the core."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from edge_agent.contract import (
    BusLink,
    Candidate,
    CompartmentState,
    DeviceAlarm,
    DeviceInfo,
    DeviceState,
    Door,
    Item,
    PushChannel,
    Severity,
)
from edge_agent.errors import DeviceTimeout, DriverError, Unsupported
from edge_agent_kerong import codec

VENDOR = "Kerong"
MODEL = "KR-CU16"
PLUGIN = "kerong"

POLARITY_QUIET_S = 60.0  # no unlock for this long: all doors open is implausible
SETTINGS_SCHEMA: dict[str, tuple[Any, ...]] = {
    "hook_closed_bit": (
        int,
        1,
        "HOOK bit value that means door closed (1 per three implementations; "
        "two documents read 1 as unlocked: set 0 for those boards)",
        (0, 1),
    ),
    "unlock_reply": (
        str,
        "auto",
        "whether 0x31 answers: 'auto' waits briefly and copes either way, 'yes', 'no'",
        ("auto", "yes", "no"),
    ),
    "probe_timeout_ms": (int, 80, "how long a probe waits for each address 0-15"),
    "listen_unsolicited": (
        bool,
        False,
        "boards on this bus send a status frame on their own when a door or item changes "
        "(firmware with change reports): apply it at once instead of at the next poll",
    ),
    "reply_timeout_ms": (int, 300, "how long a status poll waits for its reply"),
}


def identity(bus_id: str, board: int) -> str:
    return f"{PLUGIN}:{bus_id}:{board}"


def _status_matcher(board: int) -> Any:
    return lambda f: isinstance(f, codec.StatusReply) and f.board == board


def to_state(reply: codec.StatusReply, hook_closed_bit: int) -> DeviceState:
    comps = tuple(
        CompartmentState(
            index=i + 1,
            door=Door.CLOSED if reply.hook(i) == hook_closed_bit else Door.OPEN,
            item=Item.PRESENT if reply.item(i) else Item.ABSENT,
        )
        for i in range(codec.LOCKS)
    )
    return DeviceState(comps, {"hooks": f"{reply.hooks:04x}", "ir": f"{reply.ir:04x}"})


class KerongBoardDriver:
    """One board: status polls with 0x30, unlocks with 0x31 followed by a status poll."""

    # KR-CU16 lockers are spring-loaded: a released door pops open (contract 1.2), so
    # one that still reads closed after an unlock did not open.
    door_opens_on_unlock = True
    capabilities: frozenset[str] = frozenset()  # no identify LED, no out-of-service flag

    def __init__(self, bus: BusLink, board: int, settings: Mapping[str, Any],
                 events: PushChannel | None = None) -> None:
        self.bus = bus
        self.board = board
        self.events = events if settings.get("listen_unsolicited") else None
        self._listening = False
        self.hook_closed_bit = int(settings.get("hook_closed_bit", 1))
        self.unlock_reply = str(settings.get("unlock_reply", "auto"))
        self.reply_timeout = int(settings.get("reply_timeout_ms", 300)) / 1000
        if self.hook_closed_bit not in (0, 1):
            raise DriverError("hook_closed_bit must be 0 or 1")
        if self.unlock_reply not in ("auto", "yes", "no"):
            raise DriverError("unlock_reply must be 'auto', 'yes' or 'no'")
        self.decoder = codec.Decoder()
        self._last_unlock = float("-inf")

    async def _status(self) -> codec.StatusReply:
        frame = await self.bus.transact(
            codec.status_request(self.board),
            self.decoder,
            _status_matcher(self.board),
            self.reply_timeout,
        )
        if frame is None:
            raise DeviceTimeout(
                f"board {self.board} on bus {self.bus.bus_id} did not answer a status poll "
                f"within {self.reply_timeout * 1000:.0f} ms"
            )
        assert isinstance(frame, codec.StatusReply)
        return frame

    async def connect(self) -> DeviceInfo:
        await self._status()
        listen = getattr(self.bus, "listen", None)
        if self.events is not None and listen is not None and not self._listening:
            listen(codec.Decoder(), self._on_frame)  # contract 1.2: change reports
            self._listening = True
        return DeviceInfo(
            vendor=VENDOR,
            model=MODEL,
            compartments=codec.LOCKS,
            details={
                "bus": self.bus.bus_id,
                "bus_address": self.bus.address,
                "board_address": self.board,
                "hook_closed_bit": self.hook_closed_bit,
                "hook_meaning": f"HOOK bit {self.hook_closed_bit} = door closed",
                "unlock_reply": self.unlock_reply,
            },
        )

    def _on_frame(self, frame: Any) -> None:
        """A frame nobody asked for (bus thread): this board's status, pushed."""
        if self.events is not None and isinstance(frame, codec.StatusReply) \
                and frame.board == self.board:
            self.events.push(to_state(frame, self.hook_closed_bit))

    async def read_state(self) -> DeviceState:
        state = to_state(await self._status(), self.hook_closed_bit)
        details = {**state.details, "checksum_errors": self.decoder.checksum_errors,
                   "garbage_bytes": self.decoder.garbage_bytes,
                   "buffer_overflows": self.decoder.overflows}
        return DeviceState(state.compartments, details, alarms=self._polarity(state))

    def _polarity(self, state: DeviceState) -> tuple[DeviceAlarm, ...]:
        """Every door of the board open with no unlock lately is no locker room anyone
        has seen: it is the hook polarity set wrong, which silently inverts the audit
        trail (door_opened for a door that shut). Say so, naming the setting."""
        quiet = time.monotonic() - self._last_unlock > POLARITY_QUIET_S
        if quiet and all(c.door is Door.OPEN for c in state.compartments):
            return (DeviceAlarm(
                "hook_polarity",
                f"all {len(state.compartments)} doors read open with no unlock: if they are "
                f"shut, [vendor.kerong] hook_closed_bit = {self.hook_closed_bit} is wrong "
                f"for this board (try {1 - self.hook_closed_bit})", Severity.CRITICAL),)
        return ()

    async def unlock(self, compartment: int) -> DeviceState:
        if not 1 <= compartment <= codec.LOCKS:
            raise DriverError(f"compartment {compartment} out of range 1-{codec.LOCKS}")
        self._last_unlock = time.monotonic()
        if self.unlock_reply == "no":
            await self.bus.transact(
                codec.unlock_request(self.board, compartment - 1),
                self.decoder,
                _status_matcher(self.board),
                0,
                expect_reply=False,
            )
        else:
            # Some boards answer 0x31 with a status frame, some stay silent. Waiting a
            # little for the answer keeps it from landing on the next poll either way.
            wait = self.reply_timeout if self.unlock_reply == "yes" else 0.15
            await self.bus.transact(
                codec.unlock_request(self.board, compartment - 1),
                self.decoder,
                _status_matcher(self.board),
                wait,
            )
        # Robust clients confirm with a status poll rather than trusting the reply.
        return await self.read_state()

    async def identify(self) -> None:
        raise Unsupported("the KR-CU16 has no identify indicator; unlock a spare compartment")

    async def close(self) -> None:
        return None


async def probe_bus(bus: BusLink, settings: Mapping[str, Any]) -> AsyncIterator[Candidate]:
    """Ask addresses 0-15 for their status; yield each board as soon as it answers."""
    timeout = int(settings.get("probe_timeout_ms", 80)) / 1000
    decoder = codec.Decoder()
    for board in range(codec.BOARDS):
        frame = await bus.transact(
            codec.status_request(board), decoder, _status_matcher(board), timeout
        )
        if frame is not None:
            yield Candidate(
                identity=identity(bus.bus_id, board),
                plugin=PLUGIN,
                source="bus-probe",
                vendor=VENDOR,
                model=MODEL,
                address=f"{bus.address} board {board}",
                bus_id=bus.bus_id,
                properties={"board": board},
            )
