"""Everything under the state directory is for the agent's user and its group only: the
audit trail, its indexes and the registry name officers, devices and items."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from helpers import site_toml

from edge_agent.testing import running_agent, wait_device, wait_until


def loose_paths(root: Path) -> list[str]:
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, "."]:
            p = Path(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISSOCK(st.st_mode) or stat.S_ISLNK(st.st_mode):
                continue
            if st.st_mode & (stat.S_IRWXO | stat.S_IWGRP):
                bad.append(f"{p.relative_to(root)} {stat.filemode(st.st_mode)}")
    return bad


async def test_state_directory_is_private_to_the_agent_and_its_group(kerong_bus,
                                                                    tmp_path: Path) -> None:
    _sim, pty = kerong_bus({0: 0})
    state = tmp_path / "state"
    # What an older version (or a copy with a loose umask) left behind.
    (state / "audit").mkdir(parents=True, mode=0o777)
    os.chmod(state, 0o755)
    os.chmod(state / "audit", 0o777)
    leftover = state / "notes.txt"
    leftover.write_text("old")
    os.chmod(leftover, 0o666)
    old_umask = os.umask(0o022)  # the usual default: files 0644, directories 0755
    try:
        toml = site_toml({"Bank-A": pty.port},
                         extra="[audit]\nsegment_max_mb = 0.002\ncheckpoint_every = 5\n")
        async with running_agent(toml, state) as (_agent, client):
            dev = "kerong:Bank-A:0"
            await wait_device(client, dev)
            for i in range(12):
                await client.post(f"/v1/devices/{dev}/out-of-service",
                                  {"compartment": 1 + i % 4, "reason": f"check {i}",
                                   "out": i % 2 == 0})
            await wait_until(lambda: list((state / "audit").glob("*.idx")),
                             what="a full segment with its index")
    finally:
        os.umask(old_umask)
    names = {p.name for p in state.rglob("*")}
    assert {"registry.json", "checkpoints.jsonl", "seal.key", "agent.lock"} <= names
    assert any(n.endswith(".idx") for n in names)
    assert loose_paths(state) == []


def test_run_and_check_refuse_what_anyone_could_change(tmp_path: Path) -> None:
    """A world-writable config, key or state directory: anyone on the box could change
    what the agent trusts. Both commands refuse, name the file and the chmod, exit 2, and
    nothing is started or created."""
    import subprocess
    import sys

    from edge_agent import entitlements as ent

    ent.keygen(tmp_path / "keys")
    cfg = tmp_path / "site.toml"
    cfg.write_text('[site]\nid = "perm"\n[entitlements]\ntrusted_keys = ["keys/signing.pub"]\n')
    state = tmp_path / "state"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edge_agent.cli", *args],
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    for victim in (cfg, tmp_path / "keys" / "signing.pub"):
        victim.chmod(victim.stat().st_mode | 0o002)
        for args in (("config", "check", str(cfg)),
                     ("run", "--site", str(cfg), "--state-dir", str(state), "--socket",
                      str(tmp_path / "a.sock"))):
            out = run(*args)
            assert out.returncode == 2, out.stderr
            assert f"{victim}: the file is writable by every user" in out.stderr
            assert f"chmod o-w {victim}" in out.stderr and "Traceback" not in out.stderr
        assert not state.exists(), "nothing may be created"
        victim.chmod(victim.stat().st_mode & ~0o002)
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    out = run("run", "--site", str(cfg), "--state-dir", str(state), "--socket",
              str(tmp_path / "a.sock"))
    assert out.returncode == 2 and f"chmod o-w {state}" in out.stderr
    assert list(state.iterdir()) == []
