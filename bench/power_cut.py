"""Power-cut soak: at least 200 cuts at random moments against a real agent process whose
state directory is on a lazy file system (tests/powercut/lazyfs.py, in the style of
LazyFS): unsynced writes are dropped at each cut, and for a quarter of the cuts only a
random subset of their 512-byte sectors survives (torn). Load at each cut: unlocks from
three clients at once, out-of-service/back-in-service and ignore/adopt decisions,
segment rotation (50 KB segments) and checkpoints every 40 records; some cuts land
during start-up. After every cut the agent restarts on what is left.

Prints the counts and, as the baseline that proves the soak can fail, the same run
with fsync made a no-op (Debian's eatmydata), then one JSON line:
``{"figure": "power_cut", "lost": acknowledged records lost, "ratio": lost share vs
the control's, "baseline": ...}``. Needs root, /dev/fuse, fuse3, eatmydata (./run installs them).
Bounded: a fixed number of cuts, each a few seconds at most.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from edge_agent_kerong.simulator import BusOptions, PtyEndpoint, SimBoard, SimBus  # noqa: E402
from powercut.harness import PowerCutHarness, Report, available  # noqa: E402

from edge_agent.testing import short_tempdir  # noqa: E402


def soak(cuts: int, *, eatmydata: bool, seed: int, verify_every: int) -> tuple[Report, float]:
    sim = SimBus([SimBoard(0, items=0xFFFF), SimBoard(1, items=0xFFFF)], BusOptions(pace=False))
    ep = PtyEndpoint(sim)
    ep.start()
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="ea-powercut-") as d, short_tempdir() as s, \
                PowerCutHarness(Path(d), s, ep.port, eatmydata=eatmydata, seed=seed) as h:
            rep = h.run(cuts, torn_share=0.25, verify_every=verify_every)
    finally:
        ep.stop()
    return rep, time.monotonic() - started


def show(label: str, rep: Report, took: float) -> None:
    print(f"{label}: {rep.cuts} cuts ({rep.torn} torn) in {took:.0f} s; acknowledged: "
          f"{rep.acked_records} unlock records, {rep.acked_decisions} decisions; lost: "
          f"{rep.lost_records} records, {rep.lost_decisions} decision checks; verify found "
          f"tampering {rep.tampered} time(s); failed starts {rep.failed_starts}")
    for p in rep.problems[:5]:
        print("   ", p[:300])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cuts", type=int, default=200)
    ap.add_argument("--control-cuts", type=int, default=20)
    ap.add_argument("--verify-every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    why = available()
    if why:
        sys.exit(f"power_cut: cannot run here: {why}")
    rep, took = soak(args.cuts, eatmydata=False, seed=args.seed,
                     verify_every=args.verify_every)
    show("agent", rep, took)
    ctl, took = soak(args.control_cuts, eatmydata=True, seed=args.seed + 1,
                     verify_every=args.verify_every)
    show("control (eatmydata)", ctl, took)
    share = rep.lost_records / max(1, rep.acked_records)
    ctl_share = ctl.lost_records / max(1, ctl.acked_records)
    print(json.dumps({"figure": "power_cut", "lost": rep.lost_records,
                      "target": "0 acknowledged records or decisions lost, no false tamper",
                      "cuts": rep.cuts, "torn": rep.torn, "acked": rep.acked_records,
                      "decisions_lost": rep.lost_decisions, "tampered": rep.tampered,
                      "ratio": round(share / ctl_share, 4) if ctl_share else None,
                      "baseline": f"same load with fsync a no-op (eatmydata): lost "
                                  f"{ctl.lost_records} of {ctl.acked_records} in "
                                  f"{ctl.cuts} cuts"}))


if __name__ == "__main__":
    main()
