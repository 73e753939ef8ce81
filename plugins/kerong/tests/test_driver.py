"""The KR-CU16 driver against the simulator, through real pseudo-terminals and TCP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from edge_agent_kerong import codec
from edge_agent_kerong.driver import KerongBoardDriver, probe_bus
from edge_agent_kerong.simulator import BusOptions, PtyEndpoint, SimBoard, SimBus, TcpEndpoint

from edge_agent.bus import SerialBus
from edge_agent.contract import Door, Item, SerialSettings
from edge_agent.errors import DeviceTimeout, TransportError

SETTINGS = SerialSettings(19200)


@pytest.fixture
def sim() -> Iterator[tuple[SimBus, PtyEndpoint]]:
    bus = SimBus([SimBoard(0, items=0x0001), SimBoard(3, items=0x8000)])
    ep = PtyEndpoint(bus)
    ep.start()
    yield bus, ep
    ep.stop()


async def test_probe_finds_exactly_the_boards_on_the_bus(sim: tuple[SimBus, PtyEndpoint]
                                                         ) -> None:
    _bus_sim, ep = sim
    bus = SerialBus("bank-a", ep.port, SETTINGS)
    try:
        found = [c async for c in probe_bus(bus, {})]
    finally:
        await bus.close()
    assert [c.identity for c in found] == ["kerong:bank-a:0", "kerong:bank-a:3"]
    assert all(c.plugin == "kerong" and c.source == "bus-probe" for c in found)


async def test_state_and_unlock_over_pty(sim: tuple[SimBus, PtyEndpoint]) -> None:
    bus_sim, ep = sim
    bus = SerialBus("bank-a", ep.port, SETTINGS)
    drv = KerongBoardDriver(bus, 3, {})
    try:
        info = await drv.connect()
        assert info.model == "KR-CU16" and info.compartments == 16
        state = await drv.read_state()
        assert [c.index for c in state.compartments] == list(range(1, 17))
        assert state.compartments[15].item is Item.PRESENT
        assert state.compartments[0].item is Item.ABSENT
        assert all(c.door is Door.CLOSED for c in state.compartments)
        after = await drv.unlock(6)
        assert after.compartments[5].door is Door.OPEN
        assert bus_sim.unlocks == [(3, 5)]
        # On the wire: the unlock frame for board 3 lock index 5.
        assert any(w.direction == "tx" and w.data == codec.unlock_request(3, 5)
                   for w in bus.wire_snapshot())
    finally:
        await bus.close()


@pytest.mark.parametrize("unlock_replies", [True, False])
async def test_unlock_works_whether_or_not_the_board_replies(unlock_replies: bool) -> None:
    bus_sim = SimBus([SimBoard(1)], BusOptions(unlock_replies=unlock_replies))
    ep = PtyEndpoint(bus_sim)
    ep.start()
    bus = SerialBus("b", ep.port, SETTINGS)
    try:
        drv = KerongBoardDriver(bus, 1, {"unlock_reply": "auto"})
        await drv.connect()
        for lock in (1, 2, 16):
            state = await drv.unlock(lock)
            assert state.compartments[lock - 1].door is Door.OPEN
        assert bus_sim.unlocks == [(1, 0), (1, 1), (1, 15)]
    finally:
        await bus.close()
        ep.stop()


async def test_hook_polarity_setting() -> None:
    # Boards whose HOOK bit reads 1 = unlocked: the site sets hook_closed_bit = 0.
    bus_sim = SimBus([SimBoard(0)], BusOptions(hook_closed_bit=0))
    ep = PtyEndpoint(bus_sim)
    ep.start()
    bus = SerialBus("b", ep.port, SETTINGS)
    try:
        wrong = await KerongBoardDriver(bus, 0, {"hook_closed_bit": 1}).read_state()
        right = await KerongBoardDriver(bus, 0, {"hook_closed_bit": 0}).read_state()
        assert all(c.door is Door.OPEN for c in wrong.compartments)
        assert all(c.door is Door.CLOSED for c in right.compartments)
    finally:
        await bus.close()
        ep.stop()


async def test_over_tcp_bridge_and_bridge_restart() -> None:
    bus_sim = SimBus([SimBoard(2, items=0x0F0F)])
    ep = TcpEndpoint(bus_sim)
    ep.start()
    bus = SerialBus("bridge", ep.port, SETTINGS)
    drv = KerongBoardDriver(bus, 2, {})
    try:
        state = await drv.read_state()
        assert sum(c.item is Item.PRESENT for c in state.compartments) == 8
        ep.disconnect_clients()
        with pytest.raises((TransportError, DeviceTimeout)):
            for _ in range(5):
                await drv.read_state()
        # The bus reopens the socket by itself on the next transaction.
        state = await drv.read_state()
        assert sum(c.item is Item.PRESENT for c in state.compartments) == 8
    finally:
        await bus.close()
        ep.stop()


async def test_garbage_then_recovery_and_silence(sim: tuple[SimBus, PtyEndpoint]) -> None:
    bus_sim, ep = sim
    bus = SerialBus("b", ep.port, SETTINGS)
    drv = KerongBoardDriver(bus, 0, {"reply_timeout_ms": 200})
    try:
        bus_sim.faults.garbage_rate = 1.0
        for _ in range(5):
            state = await drv.read_state()  # noise before every reply: still decoded
            assert state.compartments[0].item is Item.PRESENT
        bus_sim.faults.garbage_rate = 0
        bus_sim.faults.silent = True
        with pytest.raises(DeviceTimeout, match="did not answer"):
            await drv.read_state()
        bus_sim.faults.silent = False
        assert (await drv.read_state()).compartments[0].item is Item.PRESENT
    finally:
        await bus.close()
