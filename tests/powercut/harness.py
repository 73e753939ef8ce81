"""Power cuts against a real agent process, its state directory on the lazy file system.

Each cut: start the agent (``edge-agent run``) on what the last cut left, put it under
load from several clients at once (unlocks on one board; out-of-service, back-in-service,
ignore and adopt decisions on another; segment rotation and checkpoints come with the
small segment size), kill it at a random moment (sometimes during start-up), and cut
the power: every write not yet fsynced is dropped, or for a share of the cuts only
some of its sectors reach the disk (torn). Then start it again and check that every
acknowledged record is in the trail, every acknowledged decision is in force, an
out-of-service compartment still refuses unlocks, and ``audit verify`` finds no
tampering. ``eatmydata`` runs the same load with fsync turned into a no-op: the control
that proves the harness can see a loss.

Used by ``tests/test_power_cut.py`` (20 cuts) and ``bench/power_cut.py`` (200+).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))  # tests/helpers.py

from helpers import http  # noqa: E402

UNLOCK_DEV = "kerong:Bank-1:0"
DECIDE_DEV = "kerong:Bank-1:1"
OOS_COMPARTMENTS = (13, 14, 15, 16)


def available() -> str | None:
    """Why power-cut tests cannot run here, or None."""
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse"
    if not shutil.which("fusermount3"):
        return "fusermount3 missing (Debian fuse3; ./run installs it)"
    if os.geteuid() != 0:
        return "mounting FUSE needs root here"
    try:
        import mfusepy  # noqa: F401
    except ImportError:
        return "mfusepy missing (pip; ./run installs it)"
    return None


@dataclass
class Acked:
    """What the agent acknowledged, and so must keep."""

    unlocks: dict[int, str] = field(default_factory=dict)  # outcome seq -> reason
    oos: dict[int, bool] = field(default_factory=dict)  # compartment -> out of service
    ignored: bool | None = None  # DECIDE_DEV ignored (True) or adopted (False)
    # A decision sent but not answered (the cut came first) may or may not have been
    # made: either state is right until a later decision is acknowledged.
    maybe_oos: dict[int, bool] = field(default_factory=dict)
    maybe_ignored: bool | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Report:
    cuts: int = 0
    torn: int = 0
    acked_records: int = 0
    acked_decisions: int = 0
    lost_records: int = 0
    lost_decisions: int = 0
    tampered: int = 0
    failed_starts: int = 0
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


class PowerCutHarness:
    def __init__(self, root: Path, sockdir: Path, bus_port: str, *, eatmydata: bool = False,
                 seed: int = 0) -> None:
        self.root = root
        self.backing, self.mnt = root / "backing", root / "mnt"
        self.state = self.mnt / "state"
        self.sock = sockdir / "agent.sock"
        self.eatmydata = eatmydata
        self.rng = random.Random(seed)
        self.acked = Acked()
        self.report = Report()
        self.site = root / "site.toml"
        self.site.write_text(
            '[site]\nid = "power-cut"\n'
            "[agent]\npoll_interval = 0.1\ncommand_timeout = 1.0\n"
            "backoff_initial = 0.1\nbackoff_max = 0.5\nprobe_interval = 1.0\n"
            "[audit]\nsegment_max_mb = 0.05\ncheckpoint_every = 40\n"
            f'[[buses]]\nid = "Bank-1"\nport = "{bus_port}"\nprotocol = "kerong-cu16"\n')
        self._fs: subprocess.Popen[bytes] | None = None
        self._agent: subprocess.Popen[bytes] | None = None
        self._log = root / "agent.log"

    # ------------------------------------------------------------ the file system

    def __enter__(self) -> PowerCutHarness:
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mnt.mkdir(parents=True, exist_ok=True)
        self._fs = subprocess.Popen([sys.executable, str(HERE / "lazyfs.py"),
                                     str(self.backing), str(self.mnt)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not os.path.ismount(self.mnt):
            if time.monotonic() > deadline or self._fs.poll() is not None:
                err = self._fs.stderr.read().decode() if self._fs.stderr else ""
                raise RuntimeError(f"lazyfs did not mount: {err[-1000:]}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._kill_agent()
        subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True, timeout=20)
        if self._fs is not None:
            try:
                self._fs.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._fs.kill()

    def control(self, command: str) -> None:
        with open(self.mnt / ".lazyfs", "w") as f:
            f.write(command)

    # ------------------------------------------------------------ the agent

    def _start_agent(self) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "edge_agent.cli", "run", "--site", str(self.site),
               "--state-dir", str(self.state), "--socket", str(self.sock)]
        if self.eatmydata:
            cmd = ["eatmydata", *cmd]
        with open(self._log, "ab") as log:
            self._agent = subprocess.Popen(cmd, stdout=log, stderr=log,
                                           stdin=subprocess.DEVNULL)
        return self._agent

    def _kill_agent(self) -> None:
        if self._agent is not None and self._agent.poll() is None:
            self._agent.send_signal(signal.SIGKILL)
            self._agent.wait(timeout=10)
        self._agent = None

    def _wait_up(self, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._agent is not None and self._agent.poll() is not None:
                return False
            try:
                status, body, _ = http(self.sock, "GET", f"/v1/devices/{UNLOCK_DEV}",
                                       timeout=2)
                if status == 200 and body["link"] == "online":
                    return True
            except (OSError, ValueError, KeyError, IndexError):
                pass
            time.sleep(0.05)
        return False

    # ------------------------------------------------------------ load

    def _unlocker(self, cut: int, worker: int, stop: threading.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            reason = f"cut {cut} worker {worker} #{n}"
            try:
                status, body, _ = http(self.sock, "POST", f"/v1/devices/{UNLOCK_DEV}/unlock",
                                       {"compartment": 1 + (n + worker) % 12,
                                        "reason": reason}, timeout=5)
            except (OSError, ValueError, IndexError):
                continue
            if status == 200 and body.get("audit_seq"):
                with self.acked.lock:
                    self.acked.unlocks[int(body["audit_seq"])] = reason

    def _decider(self, cut: int, stop: threading.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            if n % 5 == 0:
                ignore = not self.acked.ignored if self.acked.ignored is not None else True
                path = f"/v1/inbox/{DECIDE_DEV}/{'ignore' if ignore else 'adopt'}"
                body: dict[str, Any] = {"reason": f"cut {cut} #{n}"}
            else:
                comp = OOS_COMPARTMENTS[n % len(OOS_COMPARTMENTS)]
                out = not self.acked.oos.get(comp, False)
                path = f"/v1/devices/{UNLOCK_DEV}/out-of-service"
                body = {"compartment": comp, "reason": f"cut {cut} #{n}", "out": out}
            with self.acked.lock:
                if "out" in body:
                    self.acked.maybe_oos[body["compartment"]] = body["out"]
                else:
                    self.acked.maybe_ignored = ignore
            try:
                status, _, _ = http(self.sock, "POST", path, body, timeout=5)
            except (OSError, ValueError, IndexError):
                continue
            time.sleep(0.01)
            if status != 200:
                continue
            # Decisions come from this one thread: the last acknowledged one stands.
            with self.acked.lock:
                if "out" in body:
                    self.acked.oos[body["compartment"]] = body["out"]
                    self.acked.maybe_oos.pop(body["compartment"], None)
                else:
                    self.acked.ignored = ignore
                    self.acked.maybe_ignored = None
                self.report.acked_decisions += 1

    # ------------------------------------------------------------ one cut

    def cut(self, i: int, *, torn: bool) -> None:
        self._start_agent()
        during_start = self.rng.random() < 0.15
        stop = threading.Event()
        workers: list[threading.Thread] = []
        if during_start:
            time.sleep(self.rng.uniform(0.0, 0.6))
        elif self._wait_up():
            workers = [threading.Thread(target=self._unlocker, args=(i, w, stop), daemon=True)
                       for w in range(3)]
            workers.append(threading.Thread(target=self._decider, args=(i, stop),
                                            daemon=True))
            for t in workers:
                t.start()
            time.sleep(self.rng.uniform(0.05, 1.2))
        else:
            self.report.failed_starts += 1
            self.report.problems.append(f"cut {i}: the agent did not start: "
                                        + self._log.read_text()[-1500:])
        self._kill_agent()  # the machine dies: the process with it
        stop.set()
        for t in workers:
            t.join(timeout=10)
        self.control(f"torn {self.rng.randrange(1 << 30)}" if torn else "crash")
        self.report.cuts += 1
        self.report.torn += int(torn)

    def check(self, label: str, *, verify_log: bool = True) -> None:
        """Start on what the cut left and check everything acknowledged is there."""
        self._start_agent()
        if not self._wait_up():
            self.report.failed_starts += 1
            self.report.problems.append(f"{label}: the agent did not start: "
                                        + self._log.read_text()[-1500:])
            self._kill_agent()
            return
        try:
            _, events, _ = http(self.sock, "GET", "/v1/events?action=unlock&limit=100000",
                                timeout=30)
            have = {int(e["seq"]): e["reason"] for e in events}
            with self.acked.lock:
                lost = [s for s, r in self.acked.unlocks.items() if have.get(s) != r]
                self.report.acked_records = len(self.acked.unlocks)
                a = self.acked
                oos, ignored = dict(a.oos), a.ignored
                maybe_oos, maybe_ignored = dict(a.maybe_oos), a.maybe_ignored
                # What the restarted agent shows is the truth from now on.
                a.maybe_oos, a.maybe_ignored = {}, None
            self.report.lost_records = len(lost)
            if lost:
                self.report.problems.append(f"{label}: {len(lost)} acknowledged unlock(s) "
                                            f"missing, e.g. seq {lost[:5]}")
            _, dev, _ = http(self.sock, "GET", f"/v1/devices/{UNLOCK_DEV}")
            wrong: list[str] = []
            for c in OOS_COMPARTMENTS:
                now_out = str(c) in dev["out_of_service"]
                if now_out not in {oos.get(c, False), maybe_oos.get(c, oos.get(c, False))}:
                    wrong.append(f"compartment {c}")
                with self.acked.lock:
                    self.acked.oos[c] = now_out
                if now_out:
                    status, _, _ = http(self.sock, "POST",
                                        f"/v1/devices/{UNLOCK_DEV}/unlock",
                                        {"compartment": c, "reason": "must be refused"})
                    if status != 409:
                        wrong.append(f"compartment {c} out of service but unlocked")
            _, other, _ = http(self.sock, "GET", f"/v1/devices/{DECIDE_DEV}")
            now_ignored = bool(other.get("ignored"))
            if ignored is not None and now_ignored not in {ignored, maybe_ignored}:
                wrong.append(f"{DECIDE_DEV} ignored={now_ignored}, acknowledged "
                             f"{'ignored' if ignored else 'adopted'} ({other})")
            with self.acked.lock:
                self.acked.ignored = now_ignored
            if wrong:
                self.report.lost_decisions += 1
                self.report.problems.append(f"{label}: decisions not in force: {wrong}")
            if verify_log:
                self._verify(label)
        finally:
            self._kill_agent()

    def _verify(self, label: str) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "edge_agent.cli", "audit", "verify", "--state-dir",
             str(self.state), "--key", str(self.root / "verify.key"), "--json"],
            capture_output=True, text=True, timeout=300)
        if proc.returncode == 2 and not (self.root / "verify.key").exists():
            self._export_key()
            return self._verify(label)
        try:
            rep = json.loads(proc.stdout)
        except ValueError:
            self.report.problems.append(f"{label}: verify said {proc.stderr[-500:]}")
            return
        if rep["verdict"] == "tampered":
            self.report.tampered += 1
            self.report.problems.append(f"{label}: verify: " + "; ".join(
                f["message"] for f in rep["findings"] if f["kind"] == "tamper")[:800])
        return None

    def _export_key(self) -> None:
        """Copy verify.key off the 'box' once, as an installer does."""
        shutil.copy(self.state / "audit" / "verify.key", self.root / "verify.key")

    def run(self, cuts: int, *, torn_share: float = 0.25, verify_every: int = 1) -> Report:
        for i in range(cuts):
            torn = self.rng.random() < torn_share
            self.cut(i, torn=torn)
            self.check(f"cut {i} ({'torn' if torn else 'crash'})",
                       verify_log=(i + 1) % verify_every == 0 or i == cuts - 1)
        return self.report
