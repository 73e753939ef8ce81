"""A corpus of malformed site configs (issue 15): each is refused by `config check` and by
`run` alike, with file, key path and line, exit 2, no traceback, nothing started. The
corpus is built from a good config by one mutation each; most cases are checked
in-process (the same loader both commands use), a sample through both commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.config import load_site_config
from edge_agent.errors import ConfigError

GOOD = """\
[site]
id = "station-12"
name = "Station 12"

[agent]
poll_interval = 1.0
command_timeout = 2.0
offline_after = 3
backoff_initial = 0.5
backoff_max = 30.0
auto_adopt = true
log_level = "info"

[discovery.mdns]
enabled = true
interfaces = ["127.0.0.1"]

[audit]
retention_days = 400.0

[[buses]]
id = "bank-a"
port = "/dev/serial/by-id/usb-FTDI-if00"
protocol = "kerong-cu16"
baudrate = 19200

[[buses]]
id = "bank-b"
port = "socket://10.0.0.5:5000"

[[devices]]
plugin = "gateway"
identity = "gateway:GW-1"
address = "http://10.0.0.9:8080"

[custody]
second_person_s = 60.0

[policy.radio]
due_hours = 12.0
limit = 1
"""


def mutate(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


# name: (config, key path that must be named, line it must name)
CASES: dict[str, tuple[str, str, int]] = {}


def case(name: str, old: str, new: str, key: str, line: int) -> None:
    CASES[name] = (mutate(old, new), key, line)


# Numbers and booleans written as strings: refused, not coerced (strict).
for key, val, ln in (("poll_interval", "1.0", 6), ("command_timeout", "2.0", 7),
                     ("offline_after", "3", 8), ("backoff_initial", "0.5", 9),
                     ("backoff_max", "30.0", 10)):
    case(f"{key} as a string", f"{key} = {val}", f'{key} = "{val}"', f"agent.{key}", ln)
    case(f"{key} negative", f"{key} = {val}", f"{key} = -1", f"agent.{key}", ln)
    case(f"{key} zero", f"{key} = {val}", f"{key} = 0", f"agent.{key}", ln)
    case(f"{key} a list", f"{key} = {val}", f"{key} = [1]", f"agent.{key}", ln)
for key, val, ln in (("auto_adopt", "true", 11), ("enabled", "true", 15)):
    where = "agent" if key == "auto_adopt" else "discovery.mdns"
    case(f"{key} as a string", f"{key} = {val}", f'{key} = "true"', f"{where}.{key}", ln)
    case(f"{key} as a number", f"{key} = {val}", f"{key} = 1", f"{where}.{key}", ln)
case("log level unknown", 'log_level = "info"', 'log_level = "verbose"', "agent.log_level", 12)
case("backoff inverted", "backoff_max = 30.0", "backoff_max = 0.1", "agent", 9)
case("retention too short", "retention_days = 400.0", "retention_days = 7.0",
     "audit.retention_days", 19)
case("retention a string", "retention_days = 400.0", 'retention_days = "400"',
     "audit.retention_days", 19)
case("site id with a space", 'id = "station-12"', 'id = "station 12"', "site.id", 2)
case("site id empty", 'id = "station-12"', 'id = ""', "site.id", 2)
case("site id a number", 'id = "station-12"', "id = 12", "site.id", 2)
case("site id too long", 'id = "station-12"', f'id = "{"s" * 65}"', "site.id", 2)
case("unknown site key", 'name = "Station 12"', 'name = "S"\nowner = "x"', "site.owner", 4)
case("unknown agent key", "poll_interval = 1.0", "poll_interval = 1.0\npoll = 2",
     "agent.poll", 7)
case("mdns interface not an address", 'interfaces = ["127.0.0.1"]',
     'interfaces = ["eth0"]', "discovery.mdns.interfaces", 16)
case("mdns interfaces empty", 'interfaces = ["127.0.0.1"]', "interfaces = []",
     "discovery.mdns.interfaces", 16)
case("mdns interface a number", 'interfaces = ["127.0.0.1"]', "interfaces = [127]",
     "discovery.mdns.interfaces", 16)
case("empty bus port", 'port = "/dev/serial/by-id/usb-FTDI-if00"', 'port = ""',
     "buses[0].port", 23)
case("relative bus port", 'port = "/dev/serial/by-id/usb-FTDI-if00"', 'port = "ttyUSB0"',
     "buses[0].port", 23)
case("socket url without port", 'port = "socket://10.0.0.5:5000"',
     'port = "socket://10.0.0.5"', "buses[1].port", 29)
case("socket url bad port", 'port = "socket://10.0.0.5:5000"',
     'port = "socket://10.0.0.5:99999"', "buses[1].port", 29)
case("socket url port not a number", 'port = "socket://10.0.0.5:5000"',
     'port = "socket://10.0.0.5:http"', "buses[1].port", 29)
case("socket url no host", 'port = "socket://10.0.0.5:5000"', 'port = "socket://:5000"',
     "buses[1].port", 29)
case("unknown url scheme", 'port = "socket://10.0.0.5:5000"', 'port = "tcp://10.0.0.5:5000"',
     "buses[1].port", 29)
case("broken rfc2217 url", 'port = "socket://10.0.0.5:5000"', 'port = "rfc2217://"',
     "buses[1].port", 29)
case("bus port a number", 'port = "socket://10.0.0.5:5000"', "port = 5000", "buses[1].port",
     29)
case("non-standard baud", "baudrate = 19200", "baudrate = 19201", "buses[0].baudrate", 25)
case("baud too low", "baudrate = 19200", "baudrate = 50", "buses[0].baudrate", 25)
case("baud as a string", "baudrate = 19200", 'baudrate = "19200"', "buses[0].baudrate", 25)
case("bus id with a slash", 'id = "bank-a"', 'id = "bank/a"', "buses[0].id", 22)
case("duplicate bus id", 'id = "bank-b"', 'id = "bank-a"', "buses", 21)
case("bus without port", 'port = "/dev/serial/by-id/usb-FTDI-if00"\n', "",
     "buses[0].port", 21)
case("unknown bus key", "baudrate = 19200", "baudrate = 19200\nparity = \"E\"",
     "buses[0].parity", 26)
case("duplicate device identity", "[custody]",
     '[[devices]]\nplugin = "gateway"\nidentity = "gateway:GW-1"\naddress = "x"\n\n[custody]',
     "devices", 36)
case("device without identity", 'identity = "gateway:GW-1"\n', "", "devices[0].identity",
     31)
case("device properties not a table", 'address = "http://10.0.0.9:8080"',
     'address = "http://10.0.0.9:8080"\nproperties = 5', "devices[0].properties", 35)
case("custody window zero", "second_person_s = 60.0", "second_person_s = 0",
     "custody.second_person_s", 37)
case("custody window too long", "second_person_s = 60.0", "second_person_s = 6000",
     "custody.second_person_s", 37)
case("policy due negative", "due_hours = 12.0", "due_hours = -1", "policy.radio.due_hours", 40)
case("policy limit zero", "limit = 1", "limit = 0", "policy.radio.limit", 41)
case("policy limit a string", "limit = 1", 'limit = "1"', "policy.radio.limit", 41)
case("policy unknown key", "limit = 1", "limit = 1\nmax = 2", "policy.radio.max", 42)
case("policy class name", "[policy.radio]", "[policy.Radio]", "policy", 39)
case("weapons never stale-allowed", "[policy.radio]", '[policy.taser]\nwhen_stale = "allow"',
     "policy", 39)
case("weapons keep two people", "[policy.radio]", "[policy.firearm]\ntwo_person = false",
     "policy", 39)
case("station without slots", "[custody]",
     '[[stations]]\nid = "A"\nreader = "osdp:R"\nslots = []\n\n[custody]', "stations[0].slots", 39)
case("station compartments garbled", "[custody]",
     '[[stations]]\nid = "A"\nreader = "osdp:R"\nslots = [{ device = "d", compartments = '
     '"1-x", equipment = "radio" }]\n\n[custody]', "stations[0].slots[0].compartments", 39)
case("station keypad two digits", "[custody]",
     '[[stations]]\nid = "A"\nreader = "osdp:R"\nslots = [{ device = "d", compartments = '
     '"1", equipment = "radio", keypad = "12" }]\n\n[custody]', "stations[0].slots[0].keypad", 39)
case("uplink broker scheme", "[custody]", '[uplink]\nbroker = "http://hq:1883"\n\n[custody]',
     "uplink.broker", 37)
case("uplink prefix with a space", "[custody]",
     '[uplink]\nbroker = "mqtt://hq:1883"\ntopic_prefix = "a b"\n\n[custody]',
     "uplink.topic_prefix", 38)
case("roles not a list", "[custody]", '[roles]\nviewer = "staff"\n\n[custody]', "roles.viewer", 37)
case("trusted keys three", "[custody]",
     '[entitlements]\ntrusted_keys = ["a", "b", "c"]\n\n[custody]', "entitlements.trusted_keys", 37)
case("unknown section", "[custody]", "[alarms]\nsound = true\n\n[custody]", "alarms", 37)
case("bad toml", 'name = "Station 12"', 'name = "Station 12', "not valid TOML", 3)


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 70, len(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_malformed_config_names_its_line(name: str, tmp_path: Path) -> None:
    text, key, line = CASES[name]
    cfg = tmp_path / "site.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_site_config(cfg)
    found = "\n".join(exc.value.problems)
    assert key in found, found
    assert re.search(rf"{re.escape(str(cfg))}:{line}\b", found), (line, found)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("name", ["non-standard baud", "socket url without port",
                                  "mdns interface not an address", "backoff inverted",
                                  "duplicate device identity", "poll_interval as a string"])
def test_check_and_run_refuse_alike(name: str, tmp_path: Path) -> None:
    text, key, line = CASES[name]
    cfg = tmp_path / "site.toml"
    cfg.write_text(text)
    state = tmp_path / "state"
    for args in (("config", "check", str(cfg)),
                 ("run", "--site", str(cfg), "--state-dir", str(state), "--socket",
                  str(tmp_path / "a.sock"))):
        out = _cli(*args, cwd=tmp_path)
        assert out.returncode == 2, (args, out.stderr)
        assert f"{cfg}:{line}" in out.stderr and key in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
    assert not state.exists() and not (tmp_path / "a.sock").exists()


def test_an_unknown_device_plugin_is_refused_with_its_line(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text(GOOD.replace('plugin = "gateway"', 'plugin = "gatewy"'))
    for args in (("config", "check", str(cfg)),
                 ("run", "--site", str(cfg), "--state-dir", str(tmp_path / "s"), "--socket",
                  str(tmp_path / "a.sock"))):
        out = _cli(*args, cwd=tmp_path)
        assert out.returncode == 2 and f"{cfg}:32: devices[0].plugin: no loaded plugin " \
            "'gatewy'" in out.stderr, out.stderr


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory", "huge"])
def test_files_that_are_not_a_config_do_not_hang_or_crash(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path = Path("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    else:
        path.write_text("# " + "x" * (2 * 1024 * 1024) + "\n")
    for args in (("config", "check", str(path)),
                 ("run", "--site", str(path), "--state-dir", str(tmp_path / "s"))):
        out = _cli(*args, cwd=tmp_path)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert str(path) in out.stderr


def test_a_bus_protocol_no_plugin_probes_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text(GOOD.replace('protocol = "kerong-cu16"', 'protocol = "kerong-cu61"'))
    for args in (("config", "check", str(cfg)),
                 ("run", "--site", str(cfg), "--state-dir", str(tmp_path / "s"), "--socket",
                  str(tmp_path / "a.sock"))):
        out = _cli(*args, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        assert f"{cfg}:24: buses[0].protocol: no installed plugin probes 'kerong-cu61'" \
            in out.stderr and "kerong-cu16" in out.stderr
