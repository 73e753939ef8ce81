"""The benchmarks' figures, kept as the benches print them, and the table made from them.

Every bench prints one JSON line per figure (``{"figure": ..., "ratio": ...,
"baseline": ...}``). ``record`` runs a bench, shows its output, and keeps each of those
lines in ``bench/results.jsonl`` with the date and the machine (replacing the figure's
previous line); ``table`` writes the table in ``bench/README.md`` from that file alone,
so the README says what the benches last printed, nothing else. ``table --check`` exits
1 when the README is not what the file gives (a test runs it).

    .venv/bin/python bench/results.py record bench/uplink_drain.py [--records 100000]
    .venv/bin/python bench/results.py table [--check]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.jsonl"
README = HERE / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"

# What each figure is, in order (the JSON line says the rest: ratio, baseline, target).
FIGURES: dict[str, tuple[str, str]] = {
    "fleet_cpu": ("fleet_supervision.py", "agent CPU, 200 REST gateways + 20 Modbus "
                  "cabinets polled once a second"),
    "mdns_discovery": ("discovery_latency.py", "mDNS announce → device on an API client"),
    "audit_append": ("audit_append.py", "durable audit append throughput, 64 writers"),
    "verify_1m": ("verify_speed.py", "`audit verify` of 1,000,000 events"),
    "bus_efficiency": ("bus_efficiency.py", "RS-485 polls/s, 16 boards at 19200 baud"),
    "capture_overhead": ("bus_efficiency.py", "polls/s with `edge-agent capture` running"),
    "scan_speed": ("scan_speed.py", "`edge-agent scan`, 16 addresses x 3 line settings"),
    "tui_key_to_frame": ("tui_latency.py", "dashboard key → frame read from the pty, "
                         "1,000 devices"),
    "cli_latency": ("cli_latency.py", "one-shot CLI commands"),
    "entitlements_load": ("entitlements_snapshot.py", "verify + load 100,000 officers"),
    "shift_start": ("shift_start.py", "badge → unlock on the wire, 60 officers, 4 stations"),
    "uplink_drain": ("uplink_drain.py", "audit backlog drained to Mosquitto, QoS 1"),
    "fleet_45_sites_p99_ms": ("fleet_uplink.py", "45 sites → broker → ingest, end to end"),
    "serial_parse": ("serial_parse.py", "KR-CU16 decoder fed a byte per call"),
    "crash_soak": ("crash_soak.py", "kill -9 soak"),
    "power_cut": ("power_cut.py", "power cuts on a lazy file system"),
}
SKIP = {"figure", "ratio", "baseline", "target", "bench", "measured", "machine", "unit"}


def load() -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    if RESULTS.exists():
        for line in RESULTS.read_text().splitlines():
            if line.strip():
                doc = json.loads(line)
                out[str(doc["figure"])] = doc
    return out


def record(script: str, args: list[str]) -> int:
    proc = subprocess.run([sys.executable, script, *args], stdout=subprocess.PIPE,
                          text=True, check=False)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        print(f"{script} failed (exit {proc.returncode}): nothing recorded", file=sys.stderr)
        return proc.returncode
    got = load()
    stamp = {"bench": Path(script).name, "measured": dt.date.today().isoformat(),
             "machine": f"{os.cpu_count()} cores"}
    n = 0
    for line in proc.stdout.splitlines():
        if line.startswith("{") and '"figure"' in line:
            doc = json.loads(line)
            got[str(doc["figure"])] = {**doc, **stamp}
            n += 1
    if not n:
        print(f"{script} printed no figure line: nothing recorded", file=sys.stderr)
        return 1
    RESULTS.write_text("".join(json.dumps(got[k], ensure_ascii=False) + "\n"
                               for k in sorted(got)))
    write_table()
    return 0


def _cell(doc: dict[str, object]) -> str:
    ratio = doc.get("ratio")
    extras = ", ".join(f"{k} {v}" for k, v in doc.items() if k not in SKIP)
    head = f"**{ratio}**" if ratio is not None else "—"
    return f"{head} ({extras})" if extras else head


def table() -> str:
    got = load()
    rows = ["| figure | bench (how to run) | baseline (same run) | target | measured: ratio "
            "(the bench's own figures) | when |", "|---|---|---|---|---|---|"]
    for fig, (script, what) in FIGURES.items():
        doc = got.get(fig)
        run = f"`.venv/bin/python bench/{script}`"
        if doc is None:
            rows.append(f"| {what} | {run} | — | — | not recorded yet | — |")
            continue
        rows.append(f"| {what} | {run} | {doc.get('baseline', '—')} | "
                    f"{doc.get('target', '—')} | {_cell(doc)} | {doc.get('measured', '?')}, "
                    f"{doc.get('machine', '?')} |")
    return "\n".join(rows)


def write_table() -> None:
    text = README.read_text()
    i, j = text.index(START) + len(START), text.index(END)
    README.write_text(text[:i] + "\n" + table() + "\n" + text[j:])


def check() -> int:
    text = README.read_text()
    i, j = text.index(START) + len(START), text.index(END)
    if text[i:j].strip() != table().strip():
        print("bench/README.md's table is not what bench/results.jsonl gives: run "
              "'python bench/results.py table'", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("script")
    r.add_argument("args", nargs=argparse.REMAINDER)
    t = sub.add_parser("table")
    t.add_argument("--check", action="store_true")
    a = ap.parse_args()
    if a.cmd == "record":
        return record(a.script, a.args)
    if a.check:
        return check()
    write_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
