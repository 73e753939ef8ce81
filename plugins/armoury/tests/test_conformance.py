"""The armoury plugin passes edge-agent's plugin conformance suite (both profiles)."""

from __future__ import annotations

from pathlib import Path

from edge_agent_armoury.profile import ProfileLibrary
from edge_agent_armoury.simulator import CabinetSimulator

from edge_agent.conformance import ConformanceSuite, Target


class CabinetTarget(Target):
    def __init__(self) -> None:
        lib = ProfileLibrary()
        self.sims = {"armoury:WC12-0001": CabinetSimulator(lib.get("sentinel-wc12"), "WC12-0001",
                                                           auto_open=False),
                     "armoury:TD8-0002": CabinetSimulator(lib.get("boltline-td8"), "TD8-0002",
                                                          auto_open=False)}

    def start(self) -> None:
        for s in self.sims.values():
            s.start()

    def stop(self) -> None:
        for s in self.sims.values():
            s.stop()

    def site_toml(self) -> str:
        return "".join(f'[[devices]]\nplugin = "armoury"\nidentity = "{i}"\n'
                       f'address = "{s.address}"\nproperties = {{ profile = "{s.profile.name}" }}\n'
                       for i, s in self.sims.items())

    def expected(self) -> dict[str, int]:
        return {i: s.profile.profile.slots for i, s in self.sims.items()}

    def set_door(self, identity: str, compartment: int, is_open: bool) -> None:
        self.sims[identity].slot(compartment, door_open=is_open)

    def unlocked(self, identity: str) -> list[int]:
        return list(self.sims[identity].unlocks)

    def garbage(self, on: bool) -> None:
        for s in self.sims.values():
            s.garbage = on

    def silent(self, on: bool) -> None:
        for s in self.sims.values():
            s.silent = on


class TestArmouryConformance(ConformanceSuite):
    plugin = "armoury"

    def make_target(self, workdir: Path) -> Target:
        return CabinetTarget()
