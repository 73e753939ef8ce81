"""The Kerong plugin passes edge-agent's plugin conformance suite (boards on a pty bus)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edge_agent_kerong import codec
from edge_agent_kerong.simulator import KerongSimulator

from edge_agent.conformance import ConformanceSuite, Target
from edge_agent.contract import FrameDecoder


class KerongTarget(Target):
    def __init__(self, workdir: Path) -> None:
        self.link = workdir / "ttyKR"
        self.sim = KerongSimulator.from_options({"transport": "pty", "link": str(self.link),
                                                 "boards": [0, 3], "auto_close_s": 60.0})

    def start(self) -> None:
        self.sim.start()

    def stop(self) -> None:
        self.sim.stop()

    def site_toml(self) -> str:
        return (f'[[buses]]\nid = "bank-a"\nport = "{self.link}"\nprotocol = "kerong-cu16"\n'
                '[vendor.kerong]\nhook_closed_bit = 1\n')

    def expected(self) -> dict[str, int]:
        return {"kerong:bank-a:0": 16, "kerong:bank-a:3": 16}

    def set_door(self, identity: str, compartment: int, is_open: bool) -> None:
        self.sim.bus.set_door(int(identity.rsplit(":", 1)[1]), compartment - 1, not is_open)

    def unlocked(self, identity: str) -> list[int]:
        board = int(identity.rsplit(":", 1)[1])
        return [lock + 1 for b, lock in self.sim.bus.unlocks if b == board]

    def garbage(self, on: bool) -> None:
        self.sim.bus.faults.garbage_rate = 1.0 if on else 0.0

    def silent(self, on: bool) -> None:
        self.sim.bus.faults.silent = on

    def jam(self, identity: str, compartment: int, on: bool) -> None:
        key = (int(identity.rsplit(":", 1)[1]), compartment - 1)
        (self.sim.bus.jammed.add if on else self.sim.bus.jammed.discard)(key)

    def interleave(self, on: bool) -> None:
        self.sim.bus.faults.interleave = on

    def codec(self) -> tuple[Callable[[], FrameDecoder], list[bytes]]:
        frames = [codec.encode_status(board, (board * 2654435761 + i * 40503) & 0xFFFF,
                                      (i * 7919) & 0xFFFF)
                  for board in (0, 3, 15) for i in range(12)]
        return codec.Decoder, frames


class TestKerongConformance(ConformanceSuite):
    plugin = "kerong"

    def make_target(self, workdir: Path) -> Target:
        return KerongTarget(workdir)
