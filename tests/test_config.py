"""Bad site configs: exit 2, with file, key path and line, and nothing starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.config import load_site_config

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
[site]
id = "station-12"

[agent]
poll_interval = 1.0

[[buses]]
id = "bank-a"
port = "/dev/serial/by-id/usb-FTDI-if00"

[[buses]]
id = "bank-b"
port = "socket://10.0.0.5:5000"
"""

CASES = {
    # name: (broken config, line, text that must appear)
    "wrong type": (GOOD.replace("poll_interval = 1.0", 'poll_interval = "fast"'), 5,
                   "agent.poll_interval"),
    "unknown key": (GOOD.replace('port = "socket', 'prot = "x"\nport = "socket'), 13,
                    "buses[1].prot: unknown key"),
    "missing field": (GOOD.replace('port = "/dev/serial/by-id/usb-FTDI-if00"\n', ""), 7,
                      "buses[0].port: required key is missing"),
    "bad toml": (GOOD.replace('id = "bank-b"', 'id = "bank-b'), 12, "not valid TOML"),
    "duplicate bus": (GOOD.replace('"bank-b"', '"bank-a"'), 7, "used twice"),
}


def _run(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", *args], cwd=tmp,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env=dict(os.environ))


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_exits_2_with_file_key_and_line(case: str, tmp_path: Path) -> None:
    text, line, needle = CASES[case]
    cfg = tmp_path / "site.toml"
    cfg.write_text(text)
    state = tmp_path / "state"
    sock = tmp_path / "agent.sock"
    proc = _run(["run", "--site", str(cfg), "--state-dir", str(state), "--socket", str(sock)],
                tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"{cfg}:{line}:" in proc.stderr, proc.stderr
    assert needle in proc.stderr, proc.stderr
    assert "nothing was started" in proc.stderr
    assert not state.exists() and not sock.exists()
    check = _run(["config", "check", str(cfg)], tmp_path)
    assert check.returncode == 2 and f"{cfg}:{line}:" in check.stderr


def test_vendor_settings_are_checked_against_the_plugin(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text(GOOD + '\n[vendor.kerong]\nhook_closed_bit = "one"\nhook_polarity = 1\n')
    proc = _run(["config", "check", str(cfg)], tmp_path)
    assert proc.returncode == 2
    assert f"{cfg}:16: vendor.kerong.hook_closed_bit: expected int, got str" in proc.stderr
    assert f"{cfg}:17: vendor.kerong.hook_polarity: unknown key" in proc.stderr


def test_shipped_configs_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo's keys are made by `edge-agent demo` in its run directory: make them here.
    monkeypatch.setenv("EDGE_AGENT_RUN_DIR", str(tmp_path))
    assert _run(["entitlements", "keygen", "--out", str(tmp_path / "keys")],
                tmp_path).returncode == 0
    for name in ("demo.toml", "example.toml"):
        proc = _run(["config", "check", str(ROOT / "site_configs" / name)], tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "OK" in proc.stdout


def test_env_expansion_and_missing_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text('[site]\nid = "s"\n[[buses]]\nid = "a"\nport = "${EA_TEST_DIR}/tty"\n'
                   '[[buses]]\nid = "b"\nport = "socket://127.0.0.1:${EA_TEST_PORT:-5000}"\n')
    monkeypatch.setenv("EA_TEST_DIR", "/run/x")
    c = load_site_config(cfg)
    assert [b.port for b in c.buses] == ["/run/x/tty", "socket://127.0.0.1:5000"]
    monkeypatch.delenv("EA_TEST_DIR")
    proc = _run(["config", "check", str(cfg)], tmp_path)
    assert proc.returncode == 2 and "${EA_TEST_DIR} is not set" in proc.stderr


def test_run_refuses_bad_vendor_settings_before_starting(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text(GOOD + '\n[vendor.kerong]\nunlock_reply = 1\n')
    state, sock = tmp_path / "state", tmp_path / "agent.sock"
    proc = _run(["run", "--site", str(cfg), "--state-dir", str(state), "--socket", str(sock)],
                tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"{cfg}:16: vendor.kerong.unlock_reply: expected str, got int" in proc.stderr
    assert not state.exists() and not sock.exists()


def test_vendor_setting_values_are_checked_before_anything_starts(tmp_path: Path) -> None:
    """hook_closed_bit = 2 and unlock_reply = "maybe" used to pass config check and put
    every device in error at run time, with health ok."""
    cfg = tmp_path / "site.toml"
    cfg.write_text(GOOD + '\n[vendor.kerong]\nhook_closed_bit = 2\nunlock_reply = "maybe"\n')
    proc = _run(["config", "check", str(cfg)], tmp_path)
    assert proc.returncode == 2
    assert f"{cfg}:16: vendor.kerong.hook_closed_bit: 2 is not allowed (one of 0, 1)" \
        in proc.stderr
    assert f"{cfg}:17: vendor.kerong.unlock_reply: 'maybe' is not allowed" in proc.stderr
    state, sock = tmp_path / "state", tmp_path / "agent.sock"
    proc = _run(["run", "--site", str(cfg), "--state-dir", str(state), "--socket", str(sock)],
                tmp_path)
    assert proc.returncode == 2 and not state.exists()
