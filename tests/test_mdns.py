"""mDNS discovery through real zeroconf sockets, in a private network namespace
(``unshare -rn``) so no packet reaches a real interface. Without unshare it falls back
to loopback only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SCENARIO = Path(__file__).parent / "mdns" / "scenario.py"


def _namespace_works() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up"],
                           capture_output=True, timeout=20)
    return probe.returncode == 0


def test_mdns_discovery_in_private_namespace() -> None:
    if _namespace_works():
        cmd = ["unshare", "-rn", "sh", "-c",
               f'ip link set lo up && exec "{sys.executable}" "{SCENARIO}"']
    else:  # loopback only: interfaces=["127.0.0.1"] in the scenario
        cmd = [sys.executable, str(SCENARIO)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90,
                          stdin=subprocess.DEVNULL, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    devs = {d["id"]: d for d in out["devices"]}
    assert set(devs) == {"edgetest:SN-0042"}, "only the matching, confirmed device is adopted"
    dev = devs["edgetest:SN-0042"]
    assert dev["source"] == "mdns" and dev["link"] == "online"
    assert dev["properties"]["interface"] == "127.0.0.1"
    assert [c["door"] for c in dev["compartments"]] == ["closed"] * 3 + ["open"]
    inbox = {e["what"]: e["why"] for e in out["inbox"]}
    other = next(v for k, v in inbox.items() if "other-vendor" in k)
    assert "TXT vendor='acme', expected 'edgetest'" in other
    bad = next(v for k, v in inbox.items() if "bad-txt" in k)
    assert "not UTF-8" in bad or "serial" in bad
    assert out["status_mdns"]["interfaces"] == ["127.0.0.1"]
