"""bench/README.md's table is what the benches printed (issue 17): generated from
bench/results.jsonl, never typed by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_bench_table_is_the_benches_own_json_lines() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "results.py"), "table",
                          "--check"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    results = ROOT / "bench" / "results.jsonl"
    for line in results.read_text().splitlines() if results.exists() else []:
        doc = json.loads(line)
        assert {"figure", "baseline", "bench", "measured"} <= set(doc), doc
        assert (ROOT / "bench" / str(doc["bench"])).exists(), doc
