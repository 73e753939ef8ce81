"""Full disk on a small tmpfs the test mounts itself (``unshare -rm``): the agent goes
degraded, keeps old data and serves reads, refuses unlocks, and recovers by itself when
space returns, with nothing acknowledged lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIO = Path(__file__).parent / "fulldisk" / "scenario.py"


def test_full_disk_fails_closed_and_recovers(tmp_path: Path) -> None:
    if not shutil.which("unshare"):
        pytest.skip("unshare (util-linux) is not installed: ./run installs it")
    mnt = tmp_path / "small"
    mnt.mkdir()
    cmd = ["unshare", "-rm", "sh", "-c",
           f'mount -t tmpfs -o size=512k tmpfs "{mnt}" && exec "{sys.executable}" '
           f'"{SCENARIO}" "{mnt}"']
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=dict(os.environ))
    if proc.returncode != 0 and "mount" in proc.stderr and "permitted" in proc.stderr:
        pytest.skip(f"cannot mount tmpfs in a user namespace here: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["health_when_full"] == "degraded"
    assert "No space left" in out["audit_error"]
    assert out["unlock_when_full"].startswith("refused 503"), out["unlock_when_full"]
    assert out["unlocks_reaching_board_when_full"] == 0
    assert out["reads_when_full"] == 1 and out["events_readable_when_full"] >= 1
    assert out["old_data_intact"] is True
    assert out["health_after"] == "ok"
    assert out["acked_missing"] == []
    assert out["item_removed_kept"] is True, "an observation made while full was lost"
    assert out["recovery_event"] and out["recovery_event"][0]["kept_observations"] >= 1
    assert out["refused_audited"] is False  # it could not be written: it was refused
