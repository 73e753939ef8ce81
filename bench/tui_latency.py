"""Dashboard responsiveness under load, measured in one run.

A real agent (its own process) supervises 1,000 devices from a load plugin whose
drivers change a compartment often enough to give ~100 state changes a second. The
headless dashboard (Textual pilot) sits on the devices table; we press keys and time
each keypress until the app is idle again (handled and repainted), and measure the
dashboard process's CPU share. The same measurement with no changes flowing is the
baseline. Targets: p95 <= 100 ms, and p95 ratio (load / idle) <= 2.

Bounded: fixed key count, fixed windows; everything stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEVICES = 1000


def agent_process(sock: str, state: str, change_rate: float, ready: Any) -> None:
    from edge_agent.agent import Agent
    from edge_agent.config import parse_site_config
    from edge_agent.contract import (
        CompartmentState,
        DeviceInfo,
        DeviceState,
        Door,
        Item,
        PluginInfo,
    )
    from edge_agent.hookspecs import hookimpl

    class Driver:
        def __init__(self, seed: int) -> None:
            self.rng = random.Random(seed)
            self.items = [True] * 8

        async def connect(self) -> DeviceInfo:
            return DeviceInfo("Load", "L8", 8)

        async def read_state(self) -> DeviceState:
            # Each device is polled once a second: this rate gives ~change_rate changes/s.
            if self.rng.random() < change_rate / DEVICES:
                i = self.rng.randrange(8)
                self.items[i] = not self.items[i]
            return DeviceState(tuple(
                CompartmentState(i + 1, Door.CLOSED, Item.PRESENT if v else Item.ABSENT)
                for i, v in enumerate(self.items)))

        async def unlock(self, compartment: int) -> DeviceState:
            return await self.read_state()

        async def identify(self) -> None:
            return None

        async def close(self) -> None:
            return None

    class LoadPlugin:
        @hookimpl
        def edge_agent_plugin_info(self) -> PluginInfo:
            return PluginInfo(name="load", vendor="Load", version="0", contract="1.0")

        @hookimpl
        def edge_agent_create_driver(self, candidate: Any, context: Any) -> Driver:
            return Driver(int(candidate.identity.split(":")[1]))

    devices = "".join(f'[[devices]]\nplugin = "load"\nidentity = "load:{i:04d}"\n'
                      f'address = "10.0.{i // 250}.{i % 250}"\n' for i in range(DEVICES))
    toml = ('[site]\nid = "load"\n[agent]\npoll_interval = 1.0\n[audit]\n'
            'checkpoint_interval = 60\n' + devices)

    async def main() -> None:
        agent = Agent(parse_site_config(toml), state_dir=Path(state), socket_path=Path(sock),
                      extra_plugins={"load": LoadPlugin()}, load_entry_points=False)
        await agent.start()
        ready.set()
        await agent.run_forever()

    asyncio.run(main())


async def measure(sock: str, keys: int) -> tuple[list[float], float]:
    from tui.app import Dashboard
    from tui.screens import DevicesScreen

    app = Dashboard(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(200):
            await pilot.pause(0.05)
            if len(app.model.devices) >= DEVICES:
                break
        await pilot.press("d")
        assert isinstance(app.screen, DevicesScreen)
        await pilot.pause(1.0)
        lat = []
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        for i in range(keys):
            start = time.perf_counter()
            await pilot.press("down" if i % 20 < 10 else "up")
            await pilot.pause()  # until the app is idle: key handled, screen repainted
            lat.append(time.perf_counter() - start)
            await asyncio.sleep(0.05)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / wall
    return lat, cpu


def run(change_rate: float, keys: int) -> tuple[list[float], float]:
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="ea-tui-") as d:
        sock = str(Path(d) / "a.sock")
        ready = ctx.Event()
        proc = ctx.Process(target=agent_process, args=(sock, str(Path(d) / "s"), change_rate,
                                                       ready), daemon=True)
        proc.start()
        try:
            if not ready.wait(60):
                raise SystemExit("agent did not start")
            return asyncio.run(measure(sock, keys))
        finally:
            proc.terminate()
            proc.join(10)


async def pilot_floor(keys: int) -> list[float]:
    """The same press-and-wait-for-idle on an app that does nothing: the method's floor."""
    from textual.app import App
    from textual.widgets import Static

    class Empty(App[None]):
        def compose(self) -> Any:
            yield Static("x")

    lat = []
    async with Empty().run_test(size=(120, 40)) as pilot:
        for _ in range(keys):
            start = time.perf_counter()
            await pilot.press("down")
            await pilot.pause()
            lat.append(time.perf_counter() - start)
    return lat


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=100)
    keys = min(max(ap.parse_args().keys, 10), 1000)
    floor = asyncio.run(pilot_floor(keys))
    idle, idle_cpu = run(0.0, keys)
    busy, busy_cpu = run(100.0, keys)
    f50 = pct(floor, .5)
    print(f"devices                         {DEVICES}")
    print(f"no updates:  keypress->idle p50 {pct(idle, .5):6.1f} ms  p95 {pct(idle, .95):6.1f} ms"
          f"  CPU {idle_cpu * 100:5.1f}% of a core")
    print(f"100 chg/s:   keypress->idle p50 {pct(busy, .5):6.1f} ms  p95 {pct(busy, .95):6.1f} ms"
          f"  CPU {busy_cpu * 100:5.1f}% of a core")
    print(f"pilot's own floor (empty app)   p50 {f50:6.1f} ms  (press + wait for idle)")
    print(f"p95 under load, less the floor  {pct(busy, .95) - f50:6.1f} ms  (target <= 100 ms)")
    print(f"p95 ratio load / no updates     {pct(busy, .95) / pct(idle, .95):6.2f}  "
          f"(target <= 2)")
    print(f"mean ratio load / no updates    {statistics.mean(busy) / statistics.mean(idle):6.2f}")


if __name__ == "__main__":
    main()
