"""One-shot CLI latency (issue 17): each command against an idle agent, beside a bare
standard-library client making the same request over the same socket, in the same run.
Target: every command within 1.5x of the bare client (medians of N runs each).

The agent is a separate ``edge-agent run`` with one simulated KR-CU16 board on a pty.
Bounded: N runs of each command.

    .venv/bin/python bench/cli_latency.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from edge_agent_kerong.simulator import BusOptions, PtyEndpoint, SimBoard, SimBus

BARE = textwrap.dedent('''
    import http.client, json, socket, sys
    class C(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(sys.argv[1])
    c = C("agent"); body = sys.argv[4] if len(sys.argv) > 4 else None
    c.request(sys.argv[2], sys.argv[3], body=body,
              headers={"Content-Type": "application/json"} if body else {})
    r = c.getresponse(); print(json.dumps(json.loads(r.read())))
''')

DEV = "kerong:bench:0"


def timed(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, timeout=60)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{cmd} failed: {proc.stderr.decode()[-300:]}")
    return statistics.median(times)


def main(runs: int) -> None:
    # An installed package has its bytecode compiled (pip does it); this checkout may run
    # with PYTHONDONTWRITEBYTECODE, which would time the compiler, not the CLI.
    import edge_agent

    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    str(Path(edge_agent.__file__).parent)], check=True, timeout=120)
    bus = SimBus([SimBoard(0, items=0xFFFF)], BusOptions(pace=False, auto_close_s=0.2))
    ep = PtyEndpoint(bus)
    ep.start()
    with tempfile.TemporaryDirectory(prefix="ea-cli-") as d:
        cfg = Path(d) / "site.toml"
        cfg.write_text(f'[site]\nid = "bench"\n[[buses]]\nid = "bench"\nport = "{ep.port}"\n'
                       'protocol = "kerong-cu16"\n')
        sock = Path(d) / "agent.sock"
        agent = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "run", "--site",
                                  str(cfg), "--state-dir", str(Path(d) / "state"), "--socket",
                                  str(sock), "--log-level", "error"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not sock.exists():
                time.sleep(0.1)
            time.sleep(2.0)  # the board found and online
            cli = [sys.executable, "-m", "edge_agent.cli"]
            bare = [sys.executable, "-c", BARE, str(sock)]
            unlock = json.dumps({"compartment": 3, "reason": "bench"})
            cases = {
                "devices": (["devices", "--json"], ["GET", "/v1/devices"]),
                "status": (["status", "--json"], ["GET", "/v1/status"]),
                "events": (["events", "--json", "--limit", "50"],
                           ["GET", "/v1/events?limit=50"]),
                "plugins": (["plugins", "--json"], ["GET", "/v1/plugins"]),
                "unlock": (["unlock", DEV, "3", "--reason", "bench", "--json"],
                           ["POST", f"/v1/devices/{DEV}/unlock", unlock]),
                "--version": (["--version"], ["GET", "/v1/status"]),
                "--help": (["--help"], ["GET", "/v1/status"]),
            }
            rows = []
            for name, (args, req) in cases.items():
                sock_args = [] if name.startswith("--") else ["--socket", str(sock)]
                c = timed([*cli, *args, *sock_args], runs)
                b = timed([*bare, *req], runs)
                rows.append((name, c, b, c / b))
        finally:
            agent.terminate()
            agent.wait(20)
            ep.stop()
    print(f"one-shot commands against an idle agent, median of {runs} runs "
          "(bare: 15 lines of http.client over the same socket)")
    for name, c, b, r in rows:
        print(f"  {name:<10} cli {c * 1000:6.0f} ms   bare {b * 1000:6.0f} ms   "
              f"ratio {r:.2f}")
    worst = max(rows, key=lambda r: r[3])
    print(f"figure: worst cli / bare = {worst[3]:.2f} ({worst[0]}; target <= 1.5)")
    print(json.dumps({"figure": "cli_latency", "ratio": round(worst[3], 3),
                      "target": "<= 1.5", "worst": worst[0],
                      "baseline": "stdlib http.client over the same socket, same request",
                      "ms": {n: round(c * 1000) for n, c, _b, _r in rows}}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    main(max(3, min(ap.parse_args().runs, 100)))
