"""The plugin author kit end to end: ``edge-agent plugin new`` writes a package that,
installed with pip into a fresh virtual environment next to edge-agent, is listed by
``edge-agent plugins`` and passes its own tests, the conformance suite among them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

from edge_agent.contract import CONTRACT_VERSION

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_generated_plugin_installs_lists_and_passes_in_a_fresh_venv(tmp_path: Path) -> None:
    out = _run([sys.executable, "-m", "edge_agent.cli", "plugin", "new", "acme_lock",
                "--dir", str(tmp_path), "--vendor", "Acme Locks"])
    pkg = tmp_path / "edge-agent-acme-lock"
    assert f"created {pkg}" in out
    assert (pkg / "pyproject.toml").read_text().count('acme_lock = "edge_agent_acme_lock.plugin"')

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, clear=True)
    py, bin_dir = env_dir / "bin" / "python", env_dir / "bin"
    _run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT),
          f"{pkg}[test]"])

    listed = json.loads(_run([str(bin_dir / "edge-agent"), "plugins", "--local", "--json"]))
    mine = {p["name"]: p for p in listed}["acme_lock"]
    assert (mine["status"], mine["vendor"], mine["contract"]) == (
        "loaded", "Acme Locks", CONTRACT_VERSION)
    # Only what was installed in that environment: none of this checkout's plugins.
    assert set({p["name"] for p in listed}) == {"acme_lock"}

    result = _run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=pkg)
    # 4 codec + 3 driver (BusStandIn) + 12 conformance checks, none skipped: the example
    # target implements every optional method (jam, interleave, codec).
    assert "19 passed" in result and "skipped" not in result, result

    # Lint-clean under its own shipped config, with this checkout's edge-agent installed
    # editable (as ./run installs it: mypy must still see the core).
    _run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=pkg)
    _run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=pkg)


def test_plugin_new_refuses_bad_names_and_existing_dirs(tmp_path: Path) -> None:
    for name, says in (("Bad-Name", "lower-case"), ("kerong", "built-in")):
        proc = subprocess.run([sys.executable, "-m", "edge_agent.cli", "plugin", "new", name,
                               "--dir", str(tmp_path)], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2 and says in proc.stderr
    args = [sys.executable, "-m", "edge_agent.cli", "plugin", "new", "acme", "--dir",
            str(tmp_path)]
    assert subprocess.run(args, capture_output=True, timeout=60).returncode == 0
    again = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "already exists" in again.stderr
