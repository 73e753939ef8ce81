"""Entitlements at force scale: a signed snapshot of 100,000 officers, verified and
loaded on the box, and a card identified from it. Figures (issue 11):

* verify + load (``EntitlementStore.load``: signature, dates, index by badge hash, atomic
  write) <= 2 s and <= 150 MB peak RSS, as a ratio against a bare loop doing the same
  work in the same run: ``json.loads`` of the same file, one Ed25519 verify of the same
  canonical bytes, the same badge index, the same bytes written and fsynced;
* a card -> officer record (keyed hash + index lookup), p99, beside the bare dict lookup.

Each side runs in its own child process so its peak RSS (VmHWM) is its own. Bounded:
fixed sizes, one run each.

    .venv/bin/python bench/entitlements_snapshot.py [--officers 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from edge_agent import entitlements as ent

CHILD = textwrap.dedent('''
    import json, os, sys, time, random, statistics
    from pathlib import Path
    mode, doc_path, pub_path, state, badge_key_path, cards_path = sys.argv[1:7]
    from edge_agent import entitlements as ent
    pub = ent.load_public(Path(pub_path))
    badge_key = ent.load_badge_key(Path(badge_key_path))
    cards = json.loads(Path(cards_path).read_text())
    t0 = time.perf_counter()
    raw = Path(doc_path).read_bytes()
    if mode == "agent":
        store = ent.EntitlementStore(Path(state), {ent.key_id(pub): pub})
        snap = store.load(raw)  # the bytes, as the agent takes a snapshot it is sent
        by_badge = snap.by_badge
        officers = snap.officers
    else:
        import base64
        doc = json.loads(raw)
        pub.verify(base64.b64decode(doc["signature"]), ent.canonical(doc["snapshot"]))
        officers = {o["id"]: o for o in doc["snapshot"]["officers"]}
        by_badge = {b: oid for oid, o in officers.items() for b in o["badges"]}
        fd = os.open(Path(state) / "bare.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, ent.canonical(doc)); os.fsync(fd); os.close(fd)
    load_s = time.perf_counter() - t0
    lat = []
    for card in cards:
        t = time.perf_counter()
        if mode == "agent":
            oid = by_badge.get(ent.badge_hash(badge_key, card))
            rec = officers[oid] if oid else None
        else:
            rec = officers.get(by_badge.get(card, ""))
        lat.append(time.perf_counter() - t)
    lat.sort()
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
    print(json.dumps({"load_s": load_s, "p99_ms": lat[int(len(lat) * 0.99)] * 1000,
                      "peak_mb": hwm / 1024}))
''')


def run(mode: str, *args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, *args], check=True,
                         capture_output=True, text=True, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--officers", type=int, default=100_000)
    args = ap.parse_args()
    n = max(1, min(args.officers, 1_000_000))
    with tempfile.TemporaryDirectory(prefix="ea-ent-") as d:
        root = Path(d)
        priv, pub, _ = ent.keygen(root / "keys")
        badge_key = ent.load_badge_key(root / "keys" / "badge.key")
        cards = [f"{0x10000000 + i:08X}" for i in range(n)]
        officers = [{"id": f"PC-{i:06d}", "name": f"Officer {i}", "roles": ["officer"],
                     "badges": [ent.badge_hash(badge_key, cards[i])],
                     "qualifications": {"taser": "2030-01-01"} if i % 3 == 0 else {}}
                    for i in range(n)]
        doc = ent.sign(ent.load_private(priv), officers, valid_hours=24)
        doc_path = root / "snapshot.json"
        doc_path.write_bytes(ent.canonical(doc))
        # The bare side looks cards up by the card number itself (no keyed hash).
        bare_doc = json.loads(doc_path.read_bytes())
        size_mb = doc_path.stat().st_size / 1e6
        probe = [cards[(i * 7919) % n] for i in range(10_000)]
        (root / "cards.json").write_text(json.dumps(probe))
        for mode in ("agent", "bare"):
            (root / mode).mkdir()
        a = run("agent", str(doc_path), str(pub), str(root / "agent"),
                str(root / "keys" / "badge.key"), str(root / "cards.json"))
        del bare_doc
        b = run("bare", str(doc_path), str(pub), str(root / "bare"),
                str(root / "keys" / "badge.key"), str(root / "cards.json"))
    ratio = a["load_s"] / b["load_s"]
    print(f"snapshot: {n} officers, {size_mb:.1f} MB signed JSON")
    print(f"agent: verify + load {a['load_s']:.2f} s (target <= 2 s), peak RSS "
          f"{a['peak_mb']:.0f} MB (target <= 150), card -> officer p99 {a['p99_ms']:.3f} ms")
    print(f"bare loop, same parse + verify + index + fsynced write: {b['load_s']:.2f} s, peak "
          f"RSS {b['peak_mb']:.0f} MB, plain lookup p99 {b['p99_ms']:.4f} ms")
    print(f"figure: agent load / bare load = {ratio:.2f}")
    print(json.dumps({"figure": "entitlements_load", "ratio": round(ratio, 3),
                      "baseline": "bare: json.loads + one Ed25519 verify + badge index + "
                                  "the same bytes written and fsynced",
                      "agent_load_s": round(a["load_s"], 3), "agent_peak_mb": round(
                          a["peak_mb"], 1), "card_p99_ms": round(a["p99_ms"], 4),
                      "target": "load <= 2 s, <= 150 MB, decision p99 <= 5 ms"}))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
