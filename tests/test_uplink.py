"""The uplink against a real broker (Mosquitto from Debian, on a loopback port of this
test's own): every audit record reaches headquarters' ingest exactly once in effect,
across a broker outage and a kill -9 of the agent; a log rewritten after forwarding is
flagged by ingest; retention holds back what was not forwarded."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import site_toml

from edge_agent.client import AgentClient
from edge_agent.fleet import Ingest
from edge_agent.testing import short_tempdir, wait_device, wait_until

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
pytestmark = pytest.mark.skipif(not Path(MOSQUITTO).exists(),
                                reason="mosquitto not installed (./run installs it)")
DEV = "kerong:Bank-1:0"


class Broker:
    def __init__(self, tmp: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.conf = tmp / "mosquitto.conf"
        # As root mosquitto drops to its own user unless told otherwise: it could not
        # read this test's private files (certificates) then.
        self.head = f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\n"
        self.conf.write_text(self.head + "allow_anonymous true\npersistence false\n"
                             "max_queued_messages 0\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


def config(pty: str, broker: Broker) -> str:
    return site_toml({"Bank-1": pty}, extra=f"""
[uplink]
broker = "{broker.url}"
status_interval = 1
""").replace('id = "test-site"', 'id = "Station-12"')


async def unlock(client: AgentClient, n: int) -> None:
    await client.call("unlock", id=DEV, body={"compartment": n % 16 + 1,
                                              "reason": f"uplink {n}"})


def stored(out: Path) -> list[dict[str, Any]]:
    """The records ingest kept for Station-12 (its segments, oldest first)."""
    return [json.loads(line)
            for seg in sorted((out / "Station-12" / "audit").glob("audit-*.jsonl"))
            for line in seg.read_bytes().splitlines()]


class IngestTask:
    def __init__(self, broker: Broker, out: Path) -> None:
        self.ingest = Ingest(broker.url, out, client_id="ingest-test")
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Ingest:
        self.task = asyncio.get_running_loop().create_task(self.ingest.run(self.stop))
        await asyncio.sleep(0.5)
        return self.ingest

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)


async def test_every_record_arrives_once_across_a_broker_outage(kerong_bus: Any,
                                                                broker: Broker,
                                                                tmp_path: Path) -> None:
    from edge_agent.testing import running_agent

    _sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
    out = tmp_path / "hq"
    async with IngestTask(broker, out) as ingest, \
            running_agent(config(pty.port, broker), tmp_path / "state") as (agent, client):
        await wait_device(client, DEV)
        for n in range(10):
            await unlock(client, n)
        await wait_until(lambda: (st := agent.status()["uplink"])["backlog"] == 0
                         and st["connected"], timeout=15, what="the backlog forwarded")
        broker.stop()  # headquarters' broker goes away while the site keeps working
        for n in range(10, 25):
            await unlock(client, n)
        await wait_until(lambda: not agent.status()["uplink"]["connected"], timeout=10)
        assert agent.status()["uplink"]["backlog"] > 0
        broker.start()
        last = agent.audit.last_seq
        await wait_until(lambda: ingest.sites.get("Station-12") is not None
                         and ingest.sites["Station-12"].last_seq >= last, timeout=30,
                         what="ingest to catch up after the outage")
        site = ingest.sites["Station-12"]
        assert site.problems == [] and not site.pending
        assert site.status is not None and site.status["online"] is True
    recs = stored(out)
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    assert len(recs) >= last
    reasons = [r.get("reason") for r in recs if r["action"] == "unlock_requested"]
    assert reasons == [f"uplink {n}" for n in range(25)]


async def test_kill_9_mid_publish_loses_nothing(kerong_bus: Any, broker: Broker,
                                                tmp_path: Path) -> None:
    _sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
    cfg = tmp_path / "site.toml"
    cfg.write_text(config(pty.port, broker))
    out = tmp_path / "hq"
    with short_tempdir() as d:
        sock = d / "agent.sock"

        def start() -> subprocess.Popen[bytes]:
            sock.unlink(missing_ok=True)
            return subprocess.Popen(
                [sys.executable, "-m", "edge_agent.cli", "run", "--site", str(cfg),
                 "--state-dir", str(tmp_path / "state"), "--socket", str(sock),
                 "--log-level", "warning"], stdin=subprocess.DEVNULL)

        async with IngestTask(broker, out) as ingest:
            agent = start()
            try:
                await wait_until(sock.exists, timeout=20)
                async with AgentClient(sock) as client:
                    await wait_device(client, DEV)
                    for n in range(30):
                        await unlock(client, n)
                    last = (await client.call("status"))["audit"]["last_seq"]
                agent.send_signal(signal.SIGKILL)  # whatever was in flight, mid-publish
                agent.wait(10)
                agent = start()
                await wait_until(sock.exists, timeout=20)
                await wait_until(lambda: ingest.sites.get("Station-12") is not None
                                 and ingest.sites["Station-12"].last_seq > last, timeout=30,
                                 what="the records after the restart")
                site = ingest.sites["Station-12"]
                assert site.problems == [], site.problems
            finally:
                agent.kill()
                agent.wait(10)
    recs = stored(out)
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    assert sum(1 for r in recs if r["action"] == "unlock_requested") == 30


def test_ingest_flags_a_log_rewritten_after_forwarding(tmp_path: Path) -> None:
    """The same seq with other content, a record whose hash lies, a broken chain."""
    from edge_agent.store.audit import GENESIS, record_hash

    def rec(seq: int, prev: str, reason: str) -> dict[str, Any]:
        r = {"seq": seq, "prev": prev, "action": "unlock_requested", "reason": reason,
             "ts": "2026-12-01T00:00:00+00:00", "actor": "tech"}
        r["hash"] = record_hash(r)
        return r

    ingest = Ingest("mqtt://127.0.0.1:1", tmp_path / "hq")
    r1 = rec(1, GENESIS, "first")
    r2 = rec(2, r1["hash"], "second")
    for r in (r1, r2, r2):  # a resend is a duplicate, not a problem
        ingest.handle("edge-agent/Site-A/audit", json.dumps({**r, "site": "Site-A"}).encode())
    site = ingest.sites["Site-A"]
    assert site.problems == [] and site.duplicates == 1 and site.last_seq == 2
    forged = rec(2, r1["hash"], "second, rewritten on the box")
    ingest.handle("edge-agent/Site-A/audit", json.dumps(forged).encode())
    assert "seq 2 arrived again with other content" in site.problems[-1]
    lying = {**rec(3, r2["hash"], "third"), "reason": "changed after hashing"}
    ingest.handle("edge-agent/Site-A/audit", json.dumps(lying).encode())
    assert "hash does not match" in site.problems[-1]
    unchained = rec(3, "f" * 64, "third")
    ingest.handle("edge-agent/Site-A/audit", json.dumps(unchained).encode())
    assert "does not chain" in site.problems[-1]


async def test_entitlements_come_down_signed_and_a_forgery_is_refused(
        kerong_bus: Any, broker: Broker, tmp_path: Path) -> None:
    import aiomqtt

    from edge_agent import entitlements as ent
    from edge_agent.testing import running_agent, wait_event

    priv, pub, _ = ent.keygen(tmp_path / "keys")
    csv = tmp_path / "o.csv"
    csv.write_text("officer_id,name,roles,badges,qualifications\nPC-1,A,officer,A1B2C3D4,\n")
    doc = ent.sign(ent.load_private(priv), ent.parse_records(
        csv, ent.load_badge_key(tmp_path / "keys" / "badge.key")), valid_hours=2)
    forged = json.loads(json.dumps(doc))
    forged["snapshot"]["officers"][0]["roles"] = ["armourer"]  # signature no longer fits
    _sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
    toml = config(pty.port, broker) + f'\n[entitlements]\ntrusted_keys = ["{pub}"]\n'
    async with running_agent(toml, tmp_path / "state") as (agent, client):
        await wait_until(lambda: agent.status()["uplink"]["connected"], timeout=15)
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="hq-office") as hq:
            await hq.publish("edge-agent/all/entitlements", ent.canonical(doc), qos=1,
                             retain=True)
            loaded = await wait_event(client, action="entitlements_loaded", timeout=15)
            assert loaded["actor"] == "uplink:edge-agent/all/entitlements"
            assert (await client.call("entitlements"))["id"] == doc["snapshot"]["id"]
            await hq.publish("edge-agent/Station-12/entitlements", ent.canonical(forged),
                             qos=1)
            refused = await wait_event(client, action="entitlements_refused", timeout=15)
            assert "signature does not match" in refused["reason"]
            assert (await client.call("entitlements"))["id"] == doc["snapshot"]["id"]


async def test_two_agents_with_one_site_id_are_an_alarm(kerong_bus: Any, broker: Broker,
                                                        tmp_path: Path) -> None:
    from edge_agent.testing import running_agent

    _sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
    _sim2, pty2 = kerong_bus({1: 0xFFFF}, pace=False)
    async with running_agent(config(pty.port, broker), tmp_path / "a") as (a, _ca), \
            running_agent(config(pty2.port, broker), tmp_path / "b") as (b, _cb):
        for agent in (a, b):
            await wait_until(lambda agent=agent: any(
                al["id"] == "uplink:duplicate-site" for al in agent.status()["alarms"]),
                timeout=15, what="the duplicate site alarm")
        alarm = next(al for al in a.status()["alarms"] if al["id"] == "uplink:duplicate-site")
        assert alarm["severity"] == "critical" and "two boxes share one site id" in alarm[
            "message"]


def make_ca(d: Path, name: str) -> tuple[Path, Any, Any]:
    """A test CA (cryptography): its certificate file, certificate and key."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = d / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def server_cert(d: Path, ca_cert: Any, ca_key: Any) -> tuple[Path, Path]:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broker")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    crt, keyf = d / "broker.crt", d / "broker.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyf.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return crt, keyf


async def test_tls_verifies_the_broker_and_refuses_a_wrong_ca(kerong_bus: Any,
                                                              tmp_path: Path) -> None:
    from edge_agent.testing import running_agent

    ca_path, ca_cert, ca_key = make_ca(tmp_path, "force-ca")
    wrong_ca, _, _ = make_ca(tmp_path, "someone-else")
    crt, key = server_cert(tmp_path, ca_cert, ca_key)
    broker = Broker(tmp_path)
    broker.conf.write_text(broker.head + f"allow_anonymous true\ncafile {ca_path}\n"
                           f"certfile {crt}\nkeyfile {key}\n")
    broker.start()
    try:
        _sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
        for ca, ok in ((ca_path, True), (wrong_ca, False)):
            toml = config(pty.port, broker).replace(
                f'broker = "{broker.url}"',
                f'broker = "mqtts://127.0.0.1:{broker.port}"\nca = "{ca}"')
            async with running_agent(toml, tmp_path / f"s-{ok}") as (agent, _client):
                if ok:
                    await wait_until(lambda: agent.status()["uplink"]["connected"],
                                     timeout=15, what="a TLS connection")
                else:
                    await wait_until(lambda: "certificate verify failed" in agent.status()[
                        "uplink"]["error"], timeout=15, what="the wrong CA refused")
                    assert not agent.status()["uplink"]["connected"]
    finally:
        broker.stop()


async def test_uplink_status_from_the_shell(kerong_bus: Any, broker: Broker,
                                            tmp_path: Path) -> None:
    from edge_agent.testing import running_agent

    _sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
    async with running_agent(config(pty.port, broker), tmp_path / "s") as (agent, _c):
        await wait_until(lambda: agent.status()["uplink"]["connected"], timeout=15)
        out = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "edge_agent.cli", "uplink", "status", "--socket",
            str(agent.socket_path)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and f"{broker.url}: connected" in out.stdout
        broker.stop()
        await wait_until(lambda: not agent.status()["uplink"]["connected"], timeout=15)
        out = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "edge_agent.cli", "uplink", "status", "--json",
            "--socket", str(agent.socket_path)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 1 and json.loads(out.stdout)["connected"] is False
        broker.start()


def station_with_uplink(site: Any, broker: Broker) -> tuple[str, Any, dict[str, Any]]:
    """Station-12's config with its uplink to ``broker``, headquarters' signing key, and
    a signed lockdown of its armoury."""
    from edge_agent import entitlements as ent

    toml = site.toml().replace('id = "test-site"', 'id = "Station-12"') + f"""
[uplink]
broker = "{broker.url}"
status_interval = 1
"""
    key = ent.load_private(site.keys / "signing.key")
    return toml, key, ent.sign_command(key, "lockdown", ["Station-12"], "firearms incident")


async def test_a_signed_lockdown_from_headquarters_stops_weapon_issue(
        kerong_bus: Any, broker: Broker, tmp_path: Path) -> None:
    """Headquarters locks the armoury down with a signed command over the broker: a
    Taser is refused at the reader; a forgery is refused and audited; a release lets
    issue go on, and the old lockdown sent again after it is refused as a replay.
    Nothing from the broker opens anything."""
    import aiomqtt
    from test_custody import ALICE, CAROL, Site, badge, ready, signal

    from edge_agent import entitlements as ent
    from edge_agent.testing import running_agent, wait_event

    site = Site(tmp_path, kerong_bus)
    try:
        toml, key, lockdown = station_with_uplink(site, broker)
        async with running_agent(toml, tmp_path / "state") as (agent, client), \
                aiomqtt.Client("127.0.0.1", broker.port, identifier="hq") as hq:
            await ready(client, site)
            await wait_until(lambda: agent.status()["uplink"]["connected"], timeout=15)
            await hq.publish("edge-agent/all/command", ent.canonical(lockdown), qos=1)
            applied = await wait_event(client, lambda e: e.get("outcome") == "applied",
                                       action="hq_command")
            assert applied["details"]["kind"] == "lockdown"
            rdr = site.readers["armoury"]
            before = await badge(rdr, ALICE)
            await signal(rdr, "red", before)
            await wait_event(client, lambda e: "locked down" in (e.get("reason") or ""),
                             action="issue_refused")
            # A forgery: refused, audited.
            forged = ent.sign_command(key, "release", ["Station-12"], "x")
            forged["command"]["sites"] = ["*"]
            await hq.publish("edge-agent/Station-12/command", ent.canonical(forged), qos=1)
            await wait_event(client, lambda e: "signature" in (e.get("reason") or ""),
                             action="hq_command")
            assert site.bus.unlocks == []
            await asyncio.sleep(1.1)  # a newer command than the lockdown
            release = ent.sign_command(key, "release", ["*"], "all clear")
            await hq.publish("edge-agent/all/command", ent.canonical(release), qos=1)
            await wait_event(client, lambda e: e.get("outcome") == "applied"
                             and e["details"]["kind"] == "release", action="hq_command")
            # The old lockdown again (a replay): refused, audited, not applied.
            await hq.publish("edge-agent/Station-12/command", ent.canonical(lockdown), qos=1)
            await wait_event(client, lambda e: "replayed" in (e.get("reason") or ""),
                             action="hq_command")
            before = await badge(rdr, ALICE)
            await signal(rdr, "amber", before)
            before = await badge(rdr, CAROL)
            await signal(rdr, "green", before)
            assert site.bus.unlocks == [(3, 0)]
    finally:
        site.stop()


async def test_a_retained_lockdown_reaches_a_site_that_was_offline_and_is_not_a_replay(
        kerong_bus: Any, broker: Broker, tmp_path: Path) -> None:
    """Headquarters publishes a lockdown retained while the site is down: the site takes
    it when it connects, and after a restart the same retained copy is neither applied
    again nor audited as a replay; the lockdown stays in force (rebuilt from the trail)."""
    import aiomqtt
    from test_custody import ALICE, Site, badge, ready, signal

    from edge_agent import entitlements as ent
    from edge_agent.testing import running_agent, wait_event

    site = Site(tmp_path, kerong_bus)
    try:
        toml, _key, lockdown = station_with_uplink(site, broker)
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="hq") as hq:
            await hq.publish("edge-agent/Station-12/command", ent.canonical(lockdown), qos=1,
                             retain=True)
        for run in (1, 2):
            async with running_agent(toml, tmp_path / "state") as (agent, client):
                await ready(client, site)
                await wait_until(lambda: agent.status()["uplink"]["connected"], timeout=15)
                if run == 1:
                    await wait_event(client, lambda e: e.get("outcome") == "applied",
                                     action="hq_command")
                rdr = site.readers["armoury"]
                before = await badge(rdr, ALICE)
                await signal(rdr, "red", before)
                await wait_event(client, lambda e: "locked down" in (e.get("reason") or ""),
                                 action="issue_refused")
                got = await client.get("/v1/events", action="hq_command")
                assert [e["outcome"] for e in got] == ["applied"], got
        assert site.bus.unlocks == []
    finally:
        site.stop()


async def test_headquarters_sees_the_fleet_worst_first(kerong_bus: Any, broker: Broker,
                                                       tmp_path: Path) -> None:
    """Two sites into one broker and one ingest: a live one, and one whose log was
    rewritten after forwarding. `fleet status` puts the tampered site first; when the live
    agent stops, its death (retained, newest session) makes it DEAD; exit 1 either way."""
    import subprocess
    import sys

    from edge_agent.store.audit import GENESIS, record_hash
    from edge_agent.testing import running_agent

    def fleet_status(out: Path) -> tuple[int, list[dict[str, Any]]]:
        proc = subprocess.run([sys.executable, "-m", "edge_agent.cli", "fleet", "status",
                               "--out", str(out), "--json"], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
        return proc.returncode, json.loads(proc.stdout)

    _sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
    out = tmp_path / "hq"
    async with IngestTask(broker, out) as ingest:
        async with running_agent(config(pty.port, broker), tmp_path / "state") as (agent,
                                                                                  client):
            await wait_device(client, DEV)
            for n in range(3):
                await unlock(client, n)
            await wait_until(lambda: (s := ingest.sites.get("Station-12")) is not None
                             and s.status is not None and s.status.get("backlog") == 0
                             and s.last_seq >= (agent.audit.last_seq or 0) - 2, timeout=20,
                             what="the site's records and a status with no backlog")
            # Another site's record, then the same seq rewritten (tampering on that box).
            r1 = {"seq": 1, "prev": GENESIS, "action": "unlock_requested", "reason": "x",
                  "ts": "2026-12-01T00:00:00+00:00", "actor": "tech"}
            r1["hash"] = record_hash(r1)
            r1b = {**r1, "reason": "rewritten"}
            r1b["hash"] = record_hash({k: v for k, v in r1b.items() if k != "hash"})
            for r in (r1, r1b):
                ingest.handle("edge-agent/Site-B7/audit", json.dumps(r).encode())
            ingest.save()
            code, rows = await asyncio.to_thread(fleet_status, out)
            assert [r["site"] for r in rows] == ["Site-B7", "Station-12"]
            assert rows[0]["state"] == "TAMPERED" and "rewritten" in rows[0]["problems"][0]
            live = rows[1]
            assert live["online"] is True and live["state"] in ("ok", "degraded")
            assert live["backlog"] == 0 and live["oldest_unsent_s"] == 0.0
            assert live["status_age_s"] is not None and live["status_age_s"] < 10
            assert code == 1  # a tampered site is something to act on
        # The agent stopped cleanly: it said so (retained, newest session): STOPPED.
        await wait_until(lambda: (ingest.sites["Station-12"].status or {}).get("online")
                         is False, timeout=20, what="the site's death")
        ingest.save()
    code, rows = await asyncio.to_thread(fleet_status, out)
    assert {r["site"]: r["state"] for r in rows} == {"Site-B7": "TAMPERED",
                                                     "Station-12": "STOPPED"}
    assert code == 1


def client_cert(d: Path, ca_cert: Any, ca_key: Any, cn: str) -> tuple[Path, Path]:
    """A client certificate for ``cn`` (a site id, or headquarters' ingest)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    crt, keyf = d / f"{cn}.crt", d / f"{cn}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(keyf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return crt, keyf


async def test_client_certificates_and_the_brokers_acl(kerong_bus: Any,
                                                       tmp_path: Path) -> None:
    """Mutual TLS as a force would run it: the broker asks every client for a certificate
    from the force's CA and takes its common name as the user; its ACL lets a site write
    only under its own id, and headquarters' ingest read everything. A box whose
    certificate names another site is refused by the broker (PUBACK 0x87): the agent
    keeps every record, alarms, and delivers all of them once given the right
    certificate. A box with no certificate does not get in at all."""
    from edge_agent.testing import running_agent

    ca_path, ca_cert, ca_key = make_ca(tmp_path, "force-ca")
    crt, key = server_cert(tmp_path, ca_cert, ca_key)
    site_crt, site_key = client_cert(tmp_path, ca_cert, ca_key, "Station-12")
    other_crt, other_key = client_cert(tmp_path, ca_cert, ca_key, "Station-99")
    hq_crt, hq_key = client_cert(tmp_path, ca_cert, ca_key, "hq-ingest")
    acl = tmp_path / "acl"
    acl.write_text("user hq-ingest\ntopic read edge-agent/#\n\n"
                   "pattern write edge-agent/%u/audit\n"
                   "pattern readwrite edge-agent/%u/status\n"
                   "pattern read edge-agent/%u/entitlements\n"
                   "pattern read edge-agent/%u/command\n"
                   "pattern read edge-agent/all/#\n")
    broker = Broker(tmp_path)
    broker.conf.write_text(broker.head + f"cafile {ca_path}\ncertfile {crt}\nkeyfile {key}\n"
                           "require_certificate true\nuse_identity_as_username true\n"
                           f"allow_anonymous false\nacl_file {acl}\npersistence false\n")
    broker.start()
    url = f"mqtts://127.0.0.1:{broker.port}"
    _sim, pty = kerong_bus({0: 0xFFFF}, pace=False)

    def site_config(cert: Path | None, key_: Path | None) -> str:
        tls = f'ca = "{ca_path}"\n' + (f'cert = "{cert}"\nkey = "{key_}"\n' if cert else "")
        return config(pty.port, broker).replace(f'broker = "{broker.url}"',
                                                f'broker = "{url}"\n{tls}')

    out = tmp_path / "hq"
    ingest = Ingest(url, out, client_id="ingest-tls", ca=str(ca_path), cert=str(hq_crt),
                    key=str(hq_key))
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(ingest.run(stop))
    try:
        # No certificate: the TLS handshake is refused.
        async with running_agent(site_config(None, None), tmp_path / "s0") as (agent, _c):
            await wait_until(lambda: agent.status()["uplink"]["error"], timeout=15,
                             what="a refused handshake")
            assert not agent.status()["uplink"]["connected"]
        # A certificate for another site: connected, but every record refused.
        async with running_agent(site_config(other_crt, other_key), tmp_path / "s") as (
                agent, client):
            await wait_device(client, DEV)
            for n in range(5):
                await unlock(client, n)
            status = await wait_until(lambda: next(
                (a for a in agent.status()["alarms"] if a["id"] == "uplink:refused"), None),
                timeout=15, what="the refusal alarmed")
            assert status["severity"] == "critical" and "Not authorized" in status["message"]
            up = agent.status()["uplink"]
            assert up["acked_seq"] == 0 and up["backlog"] > 0
            assert "Not authorized" in up["error"]
        assert stored(out) == []
        # The right certificate, the same state: everything arrives, once, in order.
        async with running_agent(site_config(site_crt, site_key), tmp_path / "s") as (
                agent, client):
            await wait_until(lambda: (st := agent.status()["uplink"])["connected"]
                             and st["backlog"] == 0, timeout=20, what="the backlog drained")
            last = agent.audit.last_seq or 0
            await wait_until(lambda: "Station-12" in ingest.sites
                             and ingest.sites["Station-12"].last_seq >= last - 1,
                             timeout=20, what="ingest caught up")
            assert not any(a["id"] == "uplink:refused" for a in agent.status()["alarms"])
        ingest.save()
        recs = stored(out)
        assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
        assert [r["reason"] for r in recs if r["action"] == "unlock_requested"] == [
            f"uplink {n}" for n in range(5)]
        assert ingest.sites["Station-12"].problems == []
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        broker.stop()


async def test_headquarters_copy_is_proven_with_the_sites_exported_key(
        kerong_bus: Any, broker: Broker, tmp_path: Path) -> None:
    """Ingest keeps each site in an agent's audit layout with the checkpoints the site
    sealed: `audit verify --state-dir OUT/<site> --key <exported verify.key>` proves the
    copy intact, `events --state-dir` reads it, and an edit of the copy is found."""
    import shutil
    import subprocess
    import sys

    from edge_agent.testing import running_agent

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edge_agent.cli", *args],
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    _sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
    out = tmp_path / "hq"
    exported = tmp_path / "exported-verify.key"
    toml = config(pty.port, broker) + "\n[audit]\ncheckpoint_every = 5\n"
    async with IngestTask(broker, out) as ingest:
        async with running_agent(toml, tmp_path / "state") as (agent, client):
            shutil.copy(tmp_path / "state" / "audit" / "verify.key", exported)  # at install
            await wait_device(client, DEV)
            for n in range(12):
                await unlock(client, n)
            await wait_until(lambda: (s := ingest.sites.get("Station-12")) is not None
                             and len(s.cp_epochs) >= 3
                             and s.last_seq >= (agent.audit.last_seq or 0) - 2,
                             timeout=30, what="records and sealed checkpoints at ingest")
        ingest.save()
    copy = out / "Station-12"
    verified = await asyncio.to_thread(run, "audit", "verify", "--state-dir", str(copy),
                                       "--key", str(exported), "--json")
    report = json.loads(verified.stdout)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert report["verdict"] == "intact" and report["copy"] is True
    assert report["checkpoints"] >= 3 and report["first_seq"] == 1
    listed = await asyncio.to_thread(run, "events", "--state-dir", str(copy), "--type",
                                     "unlock_requested", "--limit", "100", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [e["reason"] for e in json.loads(listed.stdout)] == [f"uplink {n}"
                                                                for n in range(12)]
    # Someone edits headquarters' copy: a reason changed in place.
    seg = next((copy / "audit").glob("audit-*.jsonl"))
    seg.write_text(seg.read_text().replace('"uplink 3"', '"uplink 33"'))
    verified = await asyncio.to_thread(run, "audit", "verify", "--state-dir", str(copy),
                                       "--key", str(exported), "--json")
    assert verified.returncode == 1 and json.loads(verified.stdout)["verdict"] == "tampered"
