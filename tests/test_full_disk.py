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

HERE = Path(__file__).parent / "fulldisk"


def run_on_tmpfs(tmp_path: Path, script: str, size: str = "512k") -> dict:
    """Run a scenario with its state directory on a tmpfs of ``size`` that it mounts
    itself in a private mount namespace; return the JSON summary it prints."""
    if not shutil.which("unshare"):
        pytest.skip("unshare (util-linux) is not installed: ./run installs it")
    mnt = tmp_path / "small"
    mnt.mkdir()
    cmd = ["unshare", "-rm", "sh", "-c",
           f'mount -t tmpfs -o size={size} tmpfs "{mnt}" && exec "{sys.executable}" '
           f'"{HERE / script}" "{mnt}"']
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=dict(os.environ))
    if proc.returncode != 0 and "mount" in proc.stderr and "permitted" in proc.stderr:
        pytest.skip(f"cannot mount tmpfs in a user namespace here: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    out: dict = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def test_full_disk_fails_closed_and_recovers(tmp_path: Path) -> None:
    out = run_on_tmpfs(tmp_path, "scenario.py")
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


def test_an_unlock_sent_is_never_answered_refused(tmp_path: Path) -> None:
    """Room for the request record only: the board is told, so the outcome is recorded
    in the reserved space and the caller hears what the board did."""
    out = run_on_tmpfs(tmp_path, "outcome_scenario.py")
    assert out["board_unlocks"] == 1
    assert out["answer"]["status"] == 200, out["answer"]
    assert out["answer"]["audit_seq"] is not None and not out["answer"]["audit_pending"]
    assert out["health_after_outcome"] == "degraded"
    assert "reserved" in out["reserve_after_outcome"]
    assert out["next_answer"] == 503 and out["next_board_unlocks"] == 0
    assert out["after_answer"] is True
    during = [o for o in out["outcomes"] if o["reason"] == "during"]
    assert [o["outcome"] for o in during] == ["ok", "ok"]
    assert all(out["requests"][str(o["request_seq"])] == "during" for o in during)
    assert not [o for o in out["outcomes"] if o["reason"] == "next"]
    assert out["verify"] == "intact", out["findings"]


def test_a_checkpoint_cut_short_by_a_full_disk_is_not_tampering(tmp_path: Path) -> None:
    """The disk fills in the middle of a checkpoint append: nothing torn stays behind,
    the key is not evolved, the same epoch is sealed once the disk has room again."""
    out = run_on_tmpfs(tmp_path, "checkpoint_scenario.py")
    assert out["checkpoint_lines_while_full"] == 0 and out["torn_bytes_while_full"] == 0
    assert out["unreadable_lines"] == 0
    assert out["epochs"] == list(range(len(out["epochs"])))
    assert out["verify"] == "intact", out["findings"]
