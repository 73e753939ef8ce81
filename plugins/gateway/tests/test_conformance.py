"""The REST gateway plugin passes edge-agent's plugin conformance suite (listed
statically here; discovery by mDNS is covered in a network namespace by test_gateway)."""

from __future__ import annotations

from pathlib import Path

from edge_agent_gateway.simulator import GatewaySimulator

from edge_agent.conformance import ConformanceSuite, Target


class GatewayTarget(Target):
    def __init__(self) -> None:
        self.sim = GatewaySimulator(serial="GW-0007", lockers=8)

    def start(self) -> None:
        self.sim._thread.start()
        self.sim._call(self.sim._serve())  # HTTP only: no multicast outside a namespace

    def stop(self) -> None:
        self.sim.stop()

    def site_toml(self) -> str:
        return ('[[devices]]\nplugin = "gateway"\nidentity = "gateway:GW-0007"\n'
                f'address = "{self.sim.scheme}://127.0.0.1:{self.sim.port}"\n'
                f'properties = {{ host = "127.0.0.1", port = {self.sim.port}, '
                'serial = "GW-0007" }\n[vendor.gateway]\nrequest_timeout = 0.5\n')

    def expected(self) -> dict[str, int]:
        return {"gateway:GW-0007": 8}

    def set_door(self, identity: str, compartment: int, is_open: bool) -> None:
        with self.sim.lock:
            self.sim.state[compartment - 1].door_open = is_open

    def unlocked(self, identity: str) -> list[int]:
        return [i + 1 for i in self.sim.opens]

    def garbage(self, on: bool) -> None:
        self.sim.faults.garbage = on

    def silent(self, on: bool) -> None:
        self.sim.faults.drop = on

    def jam(self, identity: str, compartment: int, on: bool) -> None:
        with self.sim.lock:
            self.sim.state[compartment - 1].jammed = on


class TestGatewayConformance(ConformanceSuite):
    plugin = "gateway"

    def make_target(self, workdir: Path) -> Target:
        return GatewayTarget()
