"""Dashboard responsiveness under load, measured in one run.

A real agent (its own process) supervises 1,000 devices from a load plugin whose
drivers change a compartment often enough to give ~100 state changes a second. The
headless dashboard sits on the devices table; keys go in through its driver as a
terminal's would, and each is timed until the new cursor row is drawn; the dashboard
process's CPU share is measured too. The same measurement with no changes flowing is
the baseline. Targets: p95 <= 100 ms, and p95 ratio (load / idle) <= 2.

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
    """Keypress to repaint: the key goes in through the driver, as a terminal's would;
    the clock stops when the new cursor row is drawn."""
    from textual import events

    from tui.app import Dashboard
    from tui.screens import DevicesScreen
    from tui.vtable import VirtualTable

    app = Dashboard(sock)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(200):
            await pilot.pause(0.05)
            if len(app.model.devices) >= DEVICES:
                break
        await pilot.press("d")
        assert isinstance(app.screen, DevicesScreen)
        table = app.screen.query_one("#devices", VirtualTable)
        painted: dict[int, float] = {}  # cursor row -> when it was first drawn as the cursor
        render_line = table.render_line

        def timed_render_line(y: int) -> Any:
            strip = render_line(y)
            if int(table.scroll_offset.y) + y == table.cursor:
                painted.setdefault(table.cursor, time.perf_counter())
            return strip

        table.render_line = timed_render_line  # type: ignore[method-assign]
        await pilot.pause(1.0)
        driver = app._driver
        assert driver is not None
        # CPU share over a quiet window (no keys, no polling by this script).
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        await asyncio.sleep(5.0)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) / wall
        lat = []
        for i in range(keys):
            key = "down" if i % 20 < 10 else "up"
            target = table.cursor + (1 if key == "down" else -1)
            painted.pop(target, None)
            start = time.perf_counter()
            driver.send_message(events.Key(key, None))
            while target not in painted and time.perf_counter() - start < 5:  # noqa: ASYNC110
                await asyncio.sleep(0.0005)  # poll: the hook runs inside Textual's paint
            lat.append(painted.get(target, time.perf_counter()) - start)
            await asyncio.sleep(0.05)
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


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=100)
    keys = min(max(ap.parse_args().keys, 10), 1000)
    idle, idle_cpu = run(0.0, keys)
    busy, busy_cpu = run(100.0, keys)
    print(f"devices                         {DEVICES}")
    print(f"no updates:  key->repaint    p50 {pct(idle, .5):6.1f} ms  p95 {pct(idle, .95):6.1f} ms"
          f"  CPU {idle_cpu * 100:5.1f}% of a core")
    print(f"100 chg/s:   key->repaint    p50 {pct(busy, .5):6.1f} ms  p95 {pct(busy, .95):6.1f} ms"
          f"  CPU {busy_cpu * 100:5.1f}% of a core")
    print(f"p95 under load                  {pct(busy, .95):6.1f} ms  (target <= 100 ms)")
    print(f"p95 ratio load / no updates     {pct(busy, .95) / pct(idle, .95):6.2f}  "
          f"(target <= 2)")
    print(f"mean ratio load / no updates    {statistics.mean(busy) / statistics.mean(idle):6.2f}")
    print(f"CPU ratio load / no updates     {busy_cpu / max(idle_cpu, 1e-6):6.2f}  "
          f"(the dashboard's own work for 100 changes/s)")


if __name__ == "__main__":
    main()
