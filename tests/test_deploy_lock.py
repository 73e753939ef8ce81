"""The deployment lock (issue 15): every runtime dependency of the agent and its plugins,
pinned with the SHA-256 of its files, so 45 sites run byte-identical packages; and the
README's install recipe, run for real into a new virtual environment."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "deploy" / "requirements.lock"


def _lock_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("lock", ROOT / "deploy" / "lock.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pinned() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) as the lock file says."""
    out: dict[str, tuple[str, list[str]]] = {}
    text = LOCK.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"([A-Za-z0-9._-]+)==(\S+)\s*(.*)", line)
        assert m, f"not a pinned requirement: {line!r}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", m.group(3))
        out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = (m.group(2), hashes)
    return out


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    lock = _lock_module()
    pins = pinned()
    assert pins, "the lock is empty"
    for name, (version, hashes) in pins.items():
        assert hashes, f"{name}=={version} has no --hash: pip --require-hashes refuses it"
    # Every dependency a pyproject.toml names is pinned, at a version it allows.
    for req_text in lock.runtime_requirements() + lock.BUILD:
        req = Requirement(req_text)
        name = lock.name_of(req_text)
        assert name in pins, f"{req_text} is not in deploy/requirements.lock: run " \
                             "python deploy/lock.py"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"the lock pins {name}=={pins[name][0]}, which {req_text} does not allow: run "
            "python deploy/lock.py")
    # Ours come from the checkout, never from an index.
    assert not set(pins) & lock.OURS
    # The lock was made from the current requirements (a pyproject change relocks).
    src = (ROOT / "deploy" / "requirements.in").read_text().splitlines()[1:]
    assert sorted(src, key=str.lower) == sorted(
        set(lock.runtime_requirements() + lock.BUILD), key=str.lower)


def test_the_install_recipe_installs_exactly_the_lock(tmp_path: Path) -> None:
    """What the README tells a site to run, run: a new venv, the lock with
    --require-hashes, then the agent and its plugins from the checkout with --no-deps.
    Then pip check, and the agent loads all four plugins."""
    readme = (ROOT / "README.md").read_text()
    recipe = re.search(r"<!-- install-recipe -->\n```sh\n(.*?)```", readme, re.S)
    assert recipe, "the README has no install recipe block"
    venv = tmp_path / "venv"
    script = recipe.group(1).replace("/opt/edge-agent", str(venv))
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT,
                          capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    py = str(venv / "bin" / "python")
    check = subprocess.run([py, "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    frozen = subprocess.run([py, "-m", "pip", "list", "--format=json"], capture_output=True,
                            text=True, check=True)
    installed = {re.sub(r"[-_.]+", "-", p["name"]).lower(): p["version"]
                 for p in json.loads(frozen.stdout)}
    pins = pinned()
    for name, (version, _hashes) in pins.items():
        assert installed.get(name) == version, f"{name}: lock {version}, " \
                                               f"installed {installed.get(name)}"
    extra = set(installed) - set(pins) - _lock_module().OURS - {"pip"}
    assert not extra, f"installed but not in the lock: {sorted(extra)}"
    plugins = subprocess.run([str(venv / "bin" / "edge-agent"), "plugins", "--local",
                              "--json"], capture_output=True, text=True, timeout=60)
    assert plugins.returncode == 0, plugins.stderr
    loaded = {p["name"] for p in json.loads(plugins.stdout) if p["status"] == "loaded"}
    assert loaded == {"kerong", "gateway", "armoury", "osdp"}
