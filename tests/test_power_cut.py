"""Power cuts proven with a lazy file system (tests/powercut/lazyfs.py): 20 cuts at
random moments under load, a quarter of them torn, against a real agent process; and
the control, the same load with fsync made a no-op by eatmydata, which must lose
acknowledged records (else the harness could not see a loss). bench/power_cut.py runs
200 and more."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from powercut.harness import PowerCutHarness, available

from edge_agent.testing import short_tempdir

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def bus(kerong_bus):  # type: ignore[no-untyped-def]
    why = available()
    if why:
        pytest.skip(f"power-cut tests need FUSE: {why}")
    _sim, ep = kerong_bus({0: 0xFFFF, 1: 0xFFFF}, pace=False)
    return ep.port


def test_twenty_power_cuts_lose_nothing_acknowledged(bus: str, tmp_path: Path) -> None:
    with short_tempdir() as sockdir, PowerCutHarness(tmp_path, sockdir, bus, seed=20) as h:
        rep = h.run(20, torn_share=0.25)
    assert rep.cuts == 20 and rep.torn >= 2, rep
    assert rep.acked_records > 20 and rep.acked_decisions > 20, rep
    assert rep.problems == [], rep.problems
    assert (rep.lost_records, rep.lost_decisions, rep.tampered, rep.failed_starts) == (
        0, 0, 0, 0)


def test_the_control_without_fsync_loses_acknowledged_records(bus: str,
                                                              tmp_path: Path) -> None:
    if not shutil.which("eatmydata"):
        pytest.skip("eatmydata (Debian) is not installed: ./run installs it")
    with short_tempdir() as sockdir, PowerCutHarness(tmp_path, sockdir, bus, seed=21,
                                                     eatmydata=True) as h:
        rep = h.run(5, torn_share=0.0, verify_every=1000)
    assert rep.acked_records > 0
    assert rep.lost_records > 0, rep
