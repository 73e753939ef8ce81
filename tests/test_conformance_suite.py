"""The conformance suite itself fails, with a message that says what to fix, when a
plugin does not do its job (here: a simulator whose door changes the plugin never sees,
and an entry point name that is not installed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from edge_agent_kerong.simulator import KerongSimulator

from edge_agent.conformance import ConformanceFailure, ConformanceSuite, Target


class StuckDoors(Target):
    """Kerong boards whose reported doors never change, whatever the test asks."""

    def __init__(self, workdir: Path) -> None:
        self.link = workdir / "ttyKR"
        self.sim = KerongSimulator.from_options({"transport": "pty", "link": str(self.link),
                                                 "boards": [1]})

    def start(self) -> None:
        self.sim.start()

    def stop(self) -> None:
        self.sim.stop()

    def site_toml(self) -> str:
        return f'[[buses]]\nid = "b"\nport = "{self.link}"\nprotocol = "kerong-cu16"\n'

    def expected(self) -> dict[str, int]:
        return {"kerong:b:1": 16}

    def set_door(self, identity: str, compartment: int, is_open: bool) -> None:
        pass  # the bug: the change never reaches the wire

    def unlocked(self, identity: str) -> list[int]:
        return []

    def garbage(self, on: bool) -> None:
        pass

    def silent(self, on: bool) -> None:
        pass


class Suite(ConformanceSuite):
    plugin = "kerong"

    def make_target(self, workdir: Path) -> Target:
        return StuckDoors(workdir)


def test_a_door_the_agent_never_sees_fails_with_what_to_fix() -> None:
    with pytest.raises(ConformanceFailure, match=r"door is open but the agent shows closed: "
                       r"read_state\(\) must report the door"):
        Suite().test_state_follows()


def test_an_unknown_entry_point_fails_with_what_to_fix() -> None:
    class Misnamed(Suite):
        plugin = "kerongg"

    with pytest.raises(ConformanceFailure, match=r"'kerongg' is not loaded.*entry-points"):
        Misnamed().test_discovery()
