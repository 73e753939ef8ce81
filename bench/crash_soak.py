"""kill -9 soak: many iterations of the crash test (tests/test_crash.py), with the
parent recording every acknowledged event. Prints the figures; exits 1 on any loss.

Bounded by --iterations (default 100, at most 2000).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from edge_agent_kerong.simulator import BusOptions, PtyEndpoint, SimBoard, SimBus  # noqa: E402
from helpers import site_toml  # noqa: E402
from test_crash import kill_cycles  # noqa: E402


async def main(iterations: int) -> int:
    sim = SimBus([SimBoard(0)], BusOptions(pace=False, turnaround_ms=0.2))
    ep = PtyEndpoint(sim)
    ep.start()
    try:
        with tempfile.TemporaryDirectory(prefix="ea-soak-") as d:
            cfg = Path(d) / "site.toml"
            cfg.write_text(site_toml({"bus": ep.port}, poll=0.05,
                                     extra='[vendor.kerong]\nunlock_reply = "yes"\n'))
            try:
                r = await kill_cycles(cfg, Path(d) / "state", iterations, seed=99,
                                      max_delay=0.8)
            except AssertionError as exc:
                print(f"FAILED: {exc}")
                return 1
    finally:
        ep.stop()
    print(f"kill -9 iterations            {r['iterations']}")
    print(f"acknowledged events           {r['acknowledged']}")
    print("acknowledged events missing   0")
    print("unparseable files             0")
    print(f"records in the log            {r['records']}")
    print(f"torn tails recovered          {r['torn_tails_recovered']}")
    print(json.dumps({"figure": "crash_soak", "ratio": 0.0, "target": "0 acknowledged "
                      "events lost", "baseline": "every event the parent saw acknowledged "
                      "(kill -9 keeps the page cache: bench/power_cut.py is the power cut)",
                      "lost": 0, "iterations": r["iterations"],
                      "acknowledged": r["acknowledged"]}))
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=100)
    sys.exit(asyncio.run(main(min(max(ap.parse_args().iterations, 1), 2000))))
