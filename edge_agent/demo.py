"""``edge-agent demo``: a simulated site, a real agent and the dashboard.

The simulator and the agent run as separate processes, exactly as on a site box: the
agent finds the simulated boards on a pseudo-terminal bus and behind a TCP bridge, and
the dashboard (or, with ``--headless``, this command) talks to it over its socket.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

from edge_agent.api import schema
from edge_agent.client import AgentClient
from edge_agent.config import load_site_config
from edge_agent.errors import ClientError, EdgeAgentError

DEMO_SITE = Path(__file__).resolve().parent.parent / "site_configs" / "demo.toml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[Any] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=8)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _wait_agent(sock: Path, agent: subprocess.Popen[Any], log: Path, timeout: float
                      ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            tail = await asyncio.to_thread(log.read_text, errors="replace")
            raise EdgeAgentError(f"the agent exited ({agent.returncode}); its log:\n"
                                 + tail[-3000:])
        if await asyncio.to_thread(sock.exists):
            try:
                async with AgentClient(sock, timeout=2) as c:
                    await c.call("status")
                return
            except ClientError:
                pass
        await asyncio.sleep(0.1)
    raise EdgeAgentError(f"the agent did not answer on {sock} within {timeout:.0f}s")


class DemoSite:
    """Start the simulator and the agent for a site config; stop both on exit."""

    def __init__(self, site: Path, run_dir: Path) -> None:
        self.site = site
        self.run_dir = run_dir
        self.sock = run_dir / "agent.sock"
        self.agent_log = run_dir / "agent.log"
        self.sim: subprocess.Popen[str] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        os.environ.setdefault("EDGE_AGENT_RUN_DIR", str(run_dir))
        os.environ.setdefault("EDGE_AGENT_DEMO_PORT", str(_free_port()))
        os.environ.setdefault("EDGE_AGENT_DEMO_INSTANCE", f"demo-{os.getpid()}-{run_dir.name}")
        self.env = dict(os.environ)

    def _entitlements(self) -> Path | None:
        """The force's keys and a signed snapshot of the demo officers, as the issuing
        office would make them (``entitlements keygen`` and ``sign``)."""
        officers = self.site.parent / "demo-officers.csv"
        if not officers.exists():
            return None
        from edge_agent import entitlements as ent

        keys = self.run_dir / "keys"
        priv, _pub, _kid = ent.keygen(keys)
        doc = ent.sign(ent.load_private(priv), ent.parse_records(
            officers, ent.load_badge_key(keys / "badge.key")), valid_hours=12)
        out = self.run_dir / "entitlements.json"
        out.write_bytes(ent.canonical(doc))
        return out

    def start(self) -> None:
        snapshot = self._entitlements()  # before the config: it names these keys
        load_site_config(self.site)  # exit 2 with file/line before anything starts
        cli = [sys.executable, "-m", "edge_agent.cli"]
        self.sim = subprocess.Popen([*cli, "simulate", "--site", str(self.site)],
                                    env=self.env, stdout=subprocess.PIPE, text=True)
        assert self.sim.stdout is not None
        deadline = time.monotonic() + 15
        self.simulated: list[str] = []
        while time.monotonic() < deadline:
            line = self.sim.stdout.readline()
            if not line:
                raise EdgeAgentError("the simulator exited before it was ready")
            if line.strip() == "ready":
                break
            self.simulated.append(line.strip())
        with open(self.agent_log, "wb") as logf:
            self.agent = subprocess.Popen(
                [*cli, "run", "--site", str(self.site), "--state-dir",
                 str(self.run_dir / "state"), "--socket", str(self.sock)],
                env=self.env, stdout=logf, stderr=subprocess.STDOUT)
        asyncio.run(_wait_agent(self.sock, self.agent, self.agent_log, 15))
        # The demo's installer adopts what the agent may not adopt on its own (the armoury
        # cabinets, the weapon station's board) as they are found, as a technician would
        # after comparing each with its label: audited under their name.
        import threading

        self.installer = threading.Thread(target=lambda: asyncio.run(_install(self.sock)),
                                          name="demo-installer", daemon=True)
        self.installer.start()
        if snapshot is not None:
            asyncio.run(_load(self.sock, snapshot.read_bytes()))
            self.shift = Shift(self.run_dir / "sim.sock")
            self.shift.start()

    shift: Shift | None = None

    def stop(self) -> None:
        if self.shift is not None:
            self.shift.stop()
        _stop(self.agent)
        _stop(self.sim)


async def _install(sock: Path, seconds: float = 30.0) -> None:
    """Adopt each device waiting in the inbox once it has been identified."""
    deadline = time.monotonic() + seconds
    done: set[str] = set()
    with contextlib.suppress(OSError, EdgeAgentError):
        async with AgentClient(sock) as c:
            while time.monotonic() < deadline:
                items: list[schema.InboxItem] = await c.call("inbox")
                for item in items:
                    dev_id = item.get("device")
                    if dev_id is None or dev_id in done or "not identified" in item["what"]:
                        continue
                    dev: schema.Device = await c.call("device", id=dev_id)
                    if dev["adopted"] or not dev.get("presented"):
                        continue
                    await c.call("adopt", id=dev_id, body={
                        "reason": "demo installer: compared with its label at installation"})
                    done.add(dev_id)
                await asyncio.sleep(0.5)


async def _load(sock: Path, snapshot: bytes) -> None:
    async with AgentClient(sock) as c:
        await c.call("entitlements_load", body=json.loads(snapshot))


# A shift at the demo's two readers: (seconds after the previous step, reader, card, keys).
SHIFT = [
    (4.0, "osdp:RDR-00000001", "A1B2C3D4", "1"),   # Alice takes a radio
    (5.0, "osdp:RDR-00000002", "B0B0B0B0", ""),    # Bob: his Taser qualification lapsed
    (5.0, "osdp:RDR-00000002", "A1B2C3D4", ""),    # Alice asks for a Taser: amber ...
    (3.0, "osdp:RDR-00000002", "CA201001", ""),    # ... Carol, an armourer, confirms
    (5.0, "osdp:RDR-00000001", "D0D0D0D0", "1"),   # Dave takes a radio (due in 36 s)
    (5.0, "osdp:RDR-00000001", "DEADBEEF", ""),    # a card nobody knows
    (6.0, "osdp:RDR-00000001", "A1B2C3D4", "1"),   # Alice brings her radio back
    (6.0, "osdp:RDR-00000001", "A1B2C3D4", "2"),   # and takes a phone
    (8.0, "take", "station-bus", "0:16"),          # a phone forced out: unauthorised removal
]


class Shift:
    """Simulated officers badging at the demo's readers through the simulators' control
    socket (what ``edge-agent sim card`` does), once through the list above."""

    def __init__(self, control: Path) -> None:
        import threading

        self.control = control
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-shift", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        import socket as socket_mod

        for delay, reader, card, keys in SHIFT:
            if self._stop.wait(delay):
                return
            if reader == "take":
                board, comp = keys.split(":")
                req = {"op": "take", "port": str(self.control.parent / "ttyKR2"),
                       "board": int(board), "compartment": int(comp)}
            else:
                req = {"op": "card", "reader": reader, "card": card, "keys": keys}
            try:
                with socket_mod.socket(socket_mod.AF_UNIX) as sock:
                    sock.settimeout(5)
                    sock.connect(str(self.control))
                    sock.sendall(json.dumps(req).encode() + b"\n")
                    sock.makefile("rb").readline()
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()


class Snapshot(TypedDict):
    status: schema.Status
    devices: list[schema.Device]


async def _snapshot(sock: Path) -> Snapshot:
    async with AgentClient(sock) as c:
        return {"status": await c.call("status"), "devices": await c.call("devices")}


def _private_network() -> bool:
    """Whether the demo can run its simulators and agent in a network namespace of their
    own (then two demos on one host, or a demo beside the test suite, never see each
    other's mDNS advertisements)."""
    if os.environ.get("EDGE_AGENT_DEMO_HOST_NETWORK") == "1":
        return False
    from edge_agent.testing import netns_available

    return netns_available()


class _NamespacedDemo:
    """The demo site served by a child in its own network namespace (``unshare -rn``).
    The agent's socket is a file, so clients outside reach it all the same."""

    def __init__(self, site: Path, run_dir: Path) -> None:
        self.site, self.run_dir = site, run_dir
        self.sock = run_dir / "agent.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.simulated: list[str] = []

    def start(self) -> None:
        inner = [sys.executable, "-m", "edge_agent.cli", "demo", "--serve", str(self.run_dir),
                 "--site", str(self.site)]
        self.proc = subprocess.Popen(
            ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "demo", *inner],
            stdin=subprocess.DEVNULL)
        ready = self.run_dir / "ready.json"
        deadline = time.monotonic() + 40
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise EdgeAgentError("the demo site did not start (see above)")
            time.sleep(0.1)
        self.simulated = json.loads(ready.read_text())["simulated"]

    def stop(self) -> None:
        _stop(self.proc)


def _serve(args: argparse.Namespace, site: Path) -> int:
    """Inside the namespace: run the simulators and the agent until told to stop."""
    run_dir = Path(args.serve)
    demo = DemoSite(site, run_dir)
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    try:
        demo.start()
        # Written whole, then renamed: the parent polls for the name and must never read
        # a half-written file (it did, under load: an empty ready.json).
        tmp = run_dir / "ready.json.tmp"
        tmp.write_text(json.dumps({"simulated": demo.simulated}))
        os.replace(tmp, run_dir / "ready.json")
        while not stop[0]:
            time.sleep(0.2)
    finally:
        demo.stop()
    return 0


# edge-agent-tui's entry point, run by the interpreter that runs the demo.
DASHBOARD = "import sys; from tui.app import main; sys.exit(main(sys.argv[1:]))"


def cmd_demo(args: argparse.Namespace) -> int:
    site = Path(args.site) if args.site else DEMO_SITE
    if args.serve:
        return _serve(args, site)
    run_dir = Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    demo: DemoSite | _NamespacedDemo = (_NamespacedDemo(site, run_dir) if _private_network()
                                        else DemoSite(site, run_dir))
    try:
        demo.start()
        if args.headless:
            time.sleep(max(0.0, args.seconds))
            snap = asyncio.run(_snapshot(demo.sock))
            _print_headless(snap, demo.simulated, as_json=args.json)
        else:
            print(f"agent API on {demo.sock} (another terminal: EDGE_AGENT_SOCKET={demo.sock} "
                  "edge-agent devices)", flush=True)
            # The dashboard is a client like any other: its own program, on this terminal.
            subprocess.run([sys.executable, "-c", DASHBOARD, "--socket", str(demo.sock),
                            "--title", f"edge-agent demo: {site.name}"], check=False)
    finally:
        demo.stop()
        if os.environ.get("EDGE_AGENT_KEEP_DEMO"):
            print(f"demo files kept in {run_dir}", file=sys.stderr)
        else:
            with contextlib.suppress(OSError):
                shutil.rmtree(run_dir)
    return 0


def _print_headless(snap: Snapshot, simulated: list[str], *, as_json: bool) -> None:
    devices = snap["devices"]
    if as_json:
        print(json.dumps({
            "site": snap["status"]["site"],
            "health": snap["status"]["health"],
            "simulated": simulated,
            "buses": snap["status"]["buses"],
            "devices": [{"id": d["id"], "plugin": d["plugin"], "vendor": d["vendor"],
                         "model": d["model"], "source": d["source"], "address": d["address"],
                         "bus_id": d["bus_id"], "link": d["link"],
                         "compartments": d["compartments"]} for d in devices],
        }, indent=2))
        return
    st = snap["status"]
    print(f"site {st['site']['id']} ({st['site']['name']}): health {st['health']}")
    for line in simulated:
        print(f"  {line}")
    print(f"discovered {len(devices)} device(s):")
    for d in devices:
        comps = d["compartments"]
        opened = [c["index"] for c in comps if c["door"] == "open"]
        items = sum(1 for c in comps if c["item"] == "present")
        what = (f"{items}/{len(comps)} items, open: {opened or 'none'}" if comps
                else "card reader")
        print(f"  {d['id']:<24} {d['model']:<20} {d['link']:<8} {d['address']:<40} {what}")
