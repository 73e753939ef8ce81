"""Signed entitlements, as the issuing office and a site use them: keygen, sign a CSV
export, load into a running agent (verified, audited), show; tampered, wrong-key, expired
and future-dated snapshots refused with reasons; badge numbers never in the clear."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import site_toml

from edge_agent import entitlements as ent
from edge_agent.testing import running_agent

CSV = """officer_id,name,roles,badges,qualifications
PC1234,Alex Smith,officer,04A1B2C3;04FFEE01,taser:2027-03-31;radio:2030-01-01
AR0007,Sam Jones,armourer;officer,0BADCAFE,firearm:2027-06-30
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", *args],
                          capture_output=True, text=True, timeout=60)


def office(tmp_path: Path, name: str = "office") -> Path:
    keys = tmp_path / name
    done = cli("entitlements", "keygen", "--out", str(keys))
    assert done.returncode == 0, done.stderr
    return keys


def test_keygen_and_sign_from_a_csv_export(tmp_path: Path) -> None:
    keys = office(tmp_path)
    assert stat.S_IMODE((keys / "signing.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((keys / "badge.key").stat().st_mode) == 0o600
    again = cli("entitlements", "keygen", "--out", str(keys))
    assert again.returncode == 2 and "never overwritten" in again.stderr
    records = tmp_path / "training.csv"
    records.write_text(CSV)
    out = tmp_path / "snap.json"
    done = cli("entitlements", "sign", "--key", str(keys / "signing.key"), "--badge-key",
               str(keys / "badge.key"), "--records", str(records), "--valid-hours", "72",
               "--out", str(out))
    assert done.returncode == 0 and "2 officer(s)" in done.stdout, done.stderr
    text = out.read_text()
    for badge in ("04A1B2C3", "04FFEE01", "0BADCAFE"):
        assert badge not in text and badge.lower() not in text
    # A bad row is named by file and line.
    records.write_text(CSV + "PC9,Bad Row,officer,XYZ,taser:31/03/2027\n")
    done = cli("entitlements", "sign", "--key", str(keys / "signing.key"), "--badge-key",
               str(keys / "badge.key"), "--records", str(records), "--valid-hours", "72",
               "--out", str(out))
    assert done.returncode == 2
    assert f"{records}:4: badges:" in done.stderr and f"{records}:4: qualifications:" \
        in done.stderr


async def test_load_show_and_every_refusal_through_a_running_agent(tmp_path: Path) -> None:
    keys, other = office(tmp_path), office(tmp_path, "impostor")
    badge_key = ent.load_badge_key(keys / "badge.key")
    officers = ent.parse_records(_write(tmp_path / "t.csv", CSV), badge_key)
    signing = ent.load_private(keys / "signing.key")
    now = dt.datetime.now(dt.UTC)
    good = ent.sign(signing, officers, 72)
    tampered = json.loads(json.dumps(good))
    tampered["snapshot"]["officers"][0]["qualifications"]["firearm"] = "2030-01-01"
    wrong_key = ent.sign(ent.load_private(other / "signing.key"), officers, 72)
    expired = ent.sign(signing, officers, 1, now=now - dt.timedelta(hours=2))
    future = ent.sign(signing, officers, 72, now=now + dt.timedelta(hours=3))
    toml = site_toml({}) + f'[entitlements]\ntrusted_keys = ["{keys / "signing.pub"}"]\n'
    state = tmp_path / "state"
    async with running_agent(toml, state) as (agent, client):
        sock = str(agent.socket_path)
        shown = await asyncio.to_thread(cli, "entitlements", "show", "--socket", sock)
        assert "no entitlements in force" in shown.stdout
        path = _write(tmp_path / "good.json", json.dumps(good))
        done = await asyncio.to_thread(cli, "entitlements", "load", str(path), "--socket", sock)
        assert done.returncode == 0 and good["snapshot"]["id"] in done.stdout, done.stderr
        reasons = {}
        for name, doc in (("tampered", tampered), ("wrong key", wrong_key),
                          ("expired", expired), ("future", future)):
            p = _write(tmp_path / f"{name}.json", json.dumps(doc))
            done = await asyncio.to_thread(cli, "entitlements", "load", str(p), "--socket",
                                           sock, "--json")
            assert done.returncode == 1, (name, done.stdout)
            reasons[name] = json.loads(done.stdout)["message"]
        assert "altered or forged" in reasons["tampered"]
        assert "does not trust" in reasons["wrong key"]
        assert "expired" in reasons["expired"]
        assert "in the future" in reasons["future"]
        shown = await client.get("/v1/entitlements")
        assert shown["id"] == good["snapshot"]["id"] and shown["officers"] == 2
        loaded = await client.get("/v1/events", action="entitlements_loaded")
        refused = await client.get("/v1/events", action="entitlements_refused")
        assert [e["details"]["id"] for e in loaded] == [good["snapshot"]["id"]]
        assert len(refused) == 4 and all(e["outcome"] == "refused" for e in refused)
    # In force after a restart (verified again), and no badge number on the box.
    async with running_agent(toml, state) as (_agent, client):
        assert (await client.get("/v1/entitlements"))["id"] == good["snapshot"]["id"]
    on_box = b"".join(p.read_bytes() for p in state.rglob("*") if p.is_file())
    for badge in (b"04A1B2C3", b"04FFEE01", b"0BADCAFE"):
        assert badge not in on_box and badge.lower() not in on_box


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_config_check_reads_the_trusted_keys_as_run_would(tmp_path: Path) -> None:
    keys = office(tmp_path)
    cfg = tmp_path / "site.toml"
    base = site_toml({})
    cfg.write_text(base + '[entitlements]\ntrusted_keys = ["office/signing.pub"]\n')
    done = cli("config", "check", str(cfg))
    assert done.returncode == 0, done.stderr
    cfg.write_text(base + '[entitlements]\ntrusted_keys = ["office/signing.pub", '
                   '"office/badge.key"]\n')
    done = cli("config", "check", str(cfg))
    line = base.count("\n") + 2
    assert done.returncode == 2
    assert f"{cfg}:{line}: entitlements.trusted_keys[1]:" in done.stderr, done.stderr
    assert (keys / "signing.pub").exists()


def test_canonical_bytes_are_those_of_the_json_module_for_what_a_snapshot_holds() -> None:
    """Snapshots signed before canonical() moved to orjson still verify: for strings of
    every kind (controls, non-BMP, U+2028), integers, lists, objects, null and booleans
    the bytes are the json module's (sorted keys, no spaces, UTF-8)."""
    import json
    import random

    def old(o: object) -> bytes:
        return json.dumps(o, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()

    chars = [chr(i) for i in [*range(0x250), 0x2028, 0x2029, 0xFEFF, 0x1F600, 0xE000]]
    rnd = random.Random(7)
    for _ in range(3000):
        s = "".join(rnd.choice(chars) for _ in range(rnd.randint(0, 10)))
        o = {s: [s, rnd.randint(-2**53, 2**53), None, True, {"b": s, "a": 1, "Ä": 2}]}
        assert ent.canonical(o) == old(o)


def test_a_snapshot_loads_from_its_bytes_canonical_or_not(tmp_path: Path) -> None:
    """The store verifies canonical bytes as they are (no second serialization) and
    falls back to the canonical form for a file someone pretty-printed."""
    import json

    priv, pub, kid = ent.keygen(tmp_path / "keys")
    key = ent.load_private(priv)
    doc = ent.sign(key, [{"id": "PC-1", "name": "Siân Ó", "roles": ["officer"],
                          "badges": ["ab" * 32], "qualifications": {"taser": "2099-01-01"}}],
                   valid_hours=1)
    (tmp_path / "state").mkdir()
    store = ent.EntitlementStore(tmp_path / "state", {kid: ent.load_public(pub)})
    raw = ent.canonical(doc)
    assert store.load(raw).officers["PC-1"]["name"] == "Siân Ó"
    pretty = json.dumps(doc, indent=2).encode()
    assert store.load(pretty).id == doc["snapshot"]["id"]
    assert (tmp_path / "state" / "entitlements.json").read_bytes() == raw  # canonical
    forged = raw.replace(b"PC-1", b"PC-9")
    with pytest.raises(ent.EntitlementError):
        store.load(forged)


def test_a_large_snapshot_is_read_a_slice_at_a_time_with_the_same_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A canonical snapshot's officers are parsed in slices cut at ``},{"`` (issue 11's
    memory figure). Slices cut inside an officer (its own list of objects, a name
    holding the cut's characters) must be mended, never misread: the result equals the
    whole-document path's, and an altered byte is still refused."""
    priv, pub, kid = ent.keygen(tmp_path / "keys")
    key = ent.load_private(priv)
    officers = [{"id": f"PC-{i:04d}", "name": 'Off "},{" icer ' + str(i), "roles": ["officer"],
                 "badges": [f"{i:064x}"],
                 "qualifications": {"taser": "2099-01-01"} if i % 2 else {},
                 "courses": [{"a": i}, {"b": [{"c": "},{\""}]}]}
                for i in range(300)]
    raw = ent.canonical(ent.sign(key, officers, valid_hours=1))
    trusted = {kid: ent.load_public(pub)}
    monkeypatch.setattr(ent, "_CHUNK", 97)  # a cut every few hundred bytes
    fast, kept = ent.verify_bytes(raw, trusted)
    assert kept is raw  # canonical: verified and kept as it is
    monkeypatch.setattr(ent, "_verify_canonical", lambda *a: None)
    whole, _ = ent.verify_bytes(raw, trusted)
    assert dict(fast.officers) == dict(whole.officers) == {o["id"]: o for o in officers}
    assert fast.by_badge == whole.by_badge and len(fast.by_badge) == 300
    monkeypatch.undo()
    monkeypatch.setattr(ent, "_CHUNK", 97)
    forged = raw.replace(b"PC-0007", b"PC-7777")
    with pytest.raises(ent.EntitlementError, match="altered or forged"):
        ent.verify_bytes(forged, trusted)
    bad = ent.sign(key, [{"id": 7, "name": "x"}], valid_hours=1)
    with pytest.raises(ent.EntitlementError, match="malformed"):
        ent.verify_bytes(ent.canonical(bad), trusted)
