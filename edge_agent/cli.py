"""``edge-agent`` command line.

Exit codes: 0 success, 1 runtime failure (agent unreachable, device offline, a weapon
compartment waiting for its second armourer), 2 usage or config error.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import re
import struct
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent import __version__
from edge_agent.api.routes import path
from edge_agent.errors import ClientError, ConfigError, EdgeAgentError
from edge_agent.oneshot import SocketClient, default_socket

if TYPE_CHECKING:
    from edge_agent.api import schema  # the records, for annotations only
    from edge_agent.config import SiteConfig

# One-shot commands answer like native tools: this module imports only the standard
# library and the stdlib client at start; the agent, the config models (pydantic), the
# plugin host and the store are imported by the commands that use them
# (tests/test_cli.py::test_one_shot_commands_import_no_framework keeps it so).

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2
EXIT_UNPROVEN = 3  # audit verify without the exported key: nothing authenticated


class UsageError(EdgeAgentError):
    pass


def _print_err(msg: str) -> None:
    print(f"edge-agent: {msg}", file=sys.stderr)


def setup_logging(level: str = "info") -> None:
    from edge_agent import logs

    logs.setup(level)


def _load_config(path: str) -> SiteConfig:
    from edge_agent.config import load_site_config

    return load_site_config(path)


def default_state_dir(config: SiteConfig) -> Path:
    if config.agent.state_dir:
        return Path(config.agent.state_dir)
    if os.geteuid() == 0:
        return Path("/var/lib/edge-agent")
    base = os.environ.get("XDG_STATE_HOME", str(Path.home() / ".local" / "state"))
    return Path(base) / "edge-agent" / config.site.id


# ---------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from edge_agent import sdnotify
    from edge_agent.agent import Agent
    from edge_agent.api.listener import raise_fd_limit

    config = _load_config(args.site)
    setup_logging(args.log_level or config.agent.log_level)
    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir(config)
    sock = Path(args.socket or config.agent.socket or os.environ.get("EDGE_AGENT_SOCKET")
                or state_dir / "agent.sock")

    raise_fd_limit()

    async def main() -> None:
        agent = Agent(config, state_dir=state_dir, socket_path=sock, config_path=args.site)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.request_stop)
        stop_pings = asyncio.Event()
        pinger: asyncio.Task[None] | None = None
        try:
            await agent.start()
            print(f"edge-agent {__version__}: site {config.site.id} running; "
                  f"API on {sock}", flush=True)
            sdnotify.notify(f"READY=1\nSTATUS=site {config.site.id}, API on {sock}")
            pinger = loop.create_task(sdnotify.watchdog(stop_pings))
            await agent.run_forever()
        finally:
            sdnotify.notify("STOPPING=1")
            stop_pings.set()
            if pinger is not None:
                await pinger
            await agent.stop()

    asyncio.run(main())
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from edge_agent import demo  # imports the dashboard only when a demo runs

    return demo.cmd_demo(args)


# ---------------------------------------------------------------------- simulate


def start_simulators(config: SiteConfig) -> list[Any]:
    from edge_agent.plugins import PluginHost

    host = PluginHost()
    host.load_entry_points()
    sims = []
    try:
        for i, sc in enumerate(config.simulators):
            if sc.plugin not in host.loaded():
                raise ConfigError("", [f"simulators[{i}]: no loaded plugin {sc.plugin!r}"])
            try:
                sim = host.call_one_sync(sc.plugin, "edge_agent_simulator",
                                         options=sc.options())
            except EdgeAgentError as exc:
                raise ConfigError("", [f"simulators[{i}] ({sc.plugin}): {exc.__cause__ or exc}"]
                                  ) from exc
            if sim is None:
                raise ConfigError("", [f"simulators[{i}]: plugin {sc.plugin} has no simulator"])
            sim.start()
            sims.append(sim)
    except BaseException:
        for s in sims:
            s.stop()
        raise
    return sims


def serve_control(path: Path, sims: list[Any]) -> Any:
    """The simulators' control socket: one JSON request per connection, e.g.
    ``{"op": "card", "reader": "osdp:RDR-00000001", "card": "A1B2C3D4", "keys": "1"}``
    presents a card at a simulated reader (``edge-agent sim card``)."""
    import socketserver
    import threading

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            try:
                req = json.loads(self.rfile.readline() or b"{}")
                answer = dispatch(req)
            except (ValueError, TypeError, KeyError) as exc:
                answer = {"error": f"bad request: {exc}"}
            self.wfile.write(json.dumps(answer).encode() + b"\n")

    def dispatch(req: dict[str, Any]) -> dict[str, Any]:
        if req.get("op") == "take":  # an item forced out of a compartment, no unlock
            boards = {str(getattr(getattr(x, "endpoint", None), "port", "")): x
                      for x in sims if hasattr(x, "take")}
            target = boards.get(str(req.get("port")))
            if target is None:
                return {"error": f"no simulated bus on {req.get('port')} (here: "
                                 f"{', '.join(sorted(boards)) or 'none'})"}
            target.take(int(req["board"]), int(req["compartment"]))
            return {"ok": True}
        if req.get("op") != "card":
            return {"error": f"unknown op {req.get('op')!r} (known: card, take)"}
        readers = {getattr(x, "identity", None): x for x in sims if hasattr(x, "present")}
        sim = readers.get(req["reader"])
        if sim is None:
            return {"error": f"no simulated reader {req['reader']} (here: "
                             f"{', '.join(sorted(str(r) for r in readers)) or 'none'})"}
        card = str(req["card"])
        if not re.fullmatch(r"[0-9A-Fa-f]{2,32}", card) or len(card) % 2:
            return {"error": f"{card!r}: a card number is an even number of hex digits"}
        before = len(sim.signals)
        sim.present(card, str(req.get("keys", "")))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and len(sim.signals) == before:
            time.sleep(0.02)
        return {"ok": True, "reader": req["reader"],
                "signal": sim.signals[-1] if len(sim.signals) > before else None}

    path.unlink(missing_ok=True)
    server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
    threading.Thread(target=server.serve_forever, name="sim-control", daemon=True).start()
    return server


def cmd_sim(args: argparse.Namespace) -> int:
    import socket as socket_mod

    path = args.control or os.path.join(os.environ.get("EDGE_AGENT_RUN_DIR", "/tmp"),
                                        "sim.sock")
    req: dict[str, Any] = (
        {"op": "card", "reader": args.reader, "card": args.card, "keys": args.keys or ""}
        if args.sim_command == "card" else
        {"op": "take", "port": args.port, "board": args.board,
         "compartment": args.compartment})
    try:
        with socket_mod.socket(socket_mod.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(path)
            sock.sendall(json.dumps(req).encode() + b"\n")
            answer = json.loads(sock.makefile("rb").readline() or b"{}")
    except (OSError, ValueError) as exc:
        raise EdgeAgentError(f"cannot reach the simulators at {path} ({exc}): is "
                             "'edge-agent simulate' or the demo running? --control PATH") from exc
    if args.json:
        print(json.dumps(answer))
    elif "error" in answer:
        raise UsageError(answer["error"])
    elif args.sim_command == "take":
        print(f"took the item from board {args.board} compartment {args.compartment} on "
              f"{args.port}, with no unlock")
    else:
        print(f"card {args.card} at {args.reader}: the reader shows "
              f"{answer.get('signal') or 'nothing (yet)'}")
    return EXIT_OK if "error" not in answer else EXIT_USAGE


def _replay_sims(args: argparse.Namespace) -> list[Any]:
    """``--replay FILE --link PATH``: a capture's wire, answering as the site did."""
    from edge_agent import pcap
    from edge_agent.replay import ReplaySimulator

    if not args.link:
        raise UsageError("--replay needs --link PATH: the pty path the site config's bus uses")
    try:
        raw = Path(args.replay).read_bytes()
    except OSError as exc:
        raise UsageError(f"{args.replay}: {exc.strerror or exc}") from exc
    if raw[:2] == b"\x1f\x8b":  # gzip: a support bundle from 'edge-agent bundle'
        from edge_agent.replay import bundle_chunks

        try:
            chunks, bus = bundle_chunks(raw, args.bus)
        except ValueError as exc:
            raise UsageError(f"{args.replay}: {exc}") from exc
        print(f"replaying bus {bus} from the bundle ({len(chunks)} frames)", flush=True)
    else:
        try:
            chunks = pcap.read(raw)
        except (ValueError, struct.error) as exc:
            raise UsageError(f"{args.replay}: not a capture from 'edge-agent capture' nor a "
                             f"support bundle from 'edge-agent bundle' ({exc})") from exc
    if not any(d == "tx" for _, d, _ in chunks):
        raise UsageError(f"{args.replay}: the capture holds no request to answer")
    sim = ReplaySimulator(chunks, args.link)
    sim.start()
    return [sim]


def cmd_simulate(args: argparse.Namespace) -> int:
    import signal

    setup_logging("warning")
    if args.replay:
        sims = _replay_sims(args)
    elif not args.site:
        raise UsageError("simulate needs --site FILE (its [[simulators]]), or --replay FILE")
    else:
        sims = start_simulators(_load_config(args.site))
    for s in sims:
        for line in s.describe():
            print(f"simulating {line}", flush=True)
    control = args.control or (os.path.join(os.environ["EDGE_AGENT_RUN_DIR"], "sim.sock")
                               if os.environ.get("EDGE_AGENT_RUN_DIR") else None)
    server = serve_control(Path(control), sims) if control else None
    if control:
        print(f"control {control}", flush=True)
    print("ready", flush=True)
    stop = {"now": False}

    def handler(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    try:
        while not stop["now"]:
            time.sleep(0.2)
    finally:
        if server is not None:
            server.shutdown()
        for s in sims:
            s.stop()
    return EXIT_OK


# ---------------------------------------------------------------------- clients


def _client(args: argparse.Namespace) -> SocketClient:
    return SocketClient(args.socket or default_socket())


def _fmt_time(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else "-"


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)


def _comp_summary(comps: list[schema.Compartment]) -> str:
    if not comps:
        return "-"
    opened = sum(1 for c in comps if c["door"] == "open")
    items = sum(1 for c in comps if c["item"] == "present")
    return f"{len(comps)} comps, {opened} open, {items} with item"


def _listing(args: argparse.Namespace, route: str, empty: str) -> list[Any] | None:
    """A one-shot list from the agent: printed as JSON with --json, a line when it is
    empty; the rows to print as a table otherwise (None: already answered)."""
    with _client(args) as c:
        items: list[Any] = c.call(route)
    if args.json:
        print(json.dumps(items, indent=2))
        return None
    if not items:
        print(empty)
        return None
    return items


def cmd_devices(args: argparse.Namespace) -> int:
    devices: list[schema.Device] | None = _listing(args, "devices",
                                                   "no devices discovered yet")
    if devices is None:
        return EXIT_OK
    rows = [(d["id"], d["vendor"] or d["plugin"], d["model"], d["link"], d["address"],
             _fmt_time(d["last_seen"]), _comp_summary(d["compartments"])) for d in devices]
    from edge_agent.api.times import zone

    print(_table(rows, ["DEVICE", "VENDOR", "MODEL", "STATE", "ADDRESS", f"SEEN ({zone()})",
                        "COMPARTMENTS"]))
    return EXIT_OK


def _event_params(args: argparse.Namespace) -> dict[str, Any]:
    from edge_agent.api.times import to_utc_iso

    try:  # one rule: ISO (naive = local) or HH:MM meaning today, local
        since = to_utc_iso(args.since) if args.since else None
        until = to_utc_iso(args.until) if args.until else None
    except ValueError as exc:
        raise UsageError(f"--since/--until: {exc}") from exc
    if args.type:
        from edge_agent.actions import Action

        known = [a.value for a in Action]
        if args.type not in known:
            close = difflib.get_close_matches(args.type.lower(), known, n=3)
            raise UsageError(f"--type {args.type}: no such event type"
                             + (f"; did you mean {' or '.join(close)}?" if close else "")
                             + " (the README lists every type)")
    return {"device": args.device, "action": args.type, "since": since,
            "until": until, "compartment": args.compartment, "item": args.item,
            "actor": args.actor}


def _events_offline(args: argparse.Namespace) -> int:
    """Records read straight from an audit directory: a stopped agent's, or
    headquarters' copy from fleet ingest (``OUT/<site>``)."""
    import collections

    from edge_agent.api.export import CSV_FIELDS, csv_line, csv_value
    from edge_agent.store.audit import Query, parse_time, read_dir

    if args.follow:
        raise UsageError("--follow needs a running agent (its socket), not --state-dir")
    audit = _audit_dir(args)
    try:
        query = Query(device=args.device, action=args.type, actor=args.actor,
                      item=args.item, compartment=args.compartment,
                      since=parse_time(args.since) if args.since else None,
                      until=parse_time(args.until) if args.until else None, limit=None)
    except EdgeAgentError as exc:
        raise UsageError(str(exc)) from exc
    if args.format:
        n = 0
        with contextlib.ExitStack() as stack:
            out = (stack.enter_context(open(args.output, "wb")) if args.output
                   else sys.stdout.buffer)
            if args.format == "csv":
                out.write(csv_line(CSV_FIELDS))
            for rec in read_dir(audit, query):
                out.write(csv_line([csv_value(rec.get(f)) for f in CSV_FIELDS])
                          if args.format == "csv"
                          else json.dumps(rec, sort_keys=True).encode() + b"\n")
                n += 1
        if args.output:
            print(f"wrote {n} record(s) to {args.output}", file=sys.stderr)
        return EXIT_OK
    newest: collections.deque[schema.AuditRecord] = collections.deque(maxlen=args.limit)
    newest.extend(read_dir(audit, query))  # type: ignore[arg-type]
    if args.json:
        print(json.dumps(list(newest), indent=2))
    else:
        for e in newest:
            print(_event_line(e))
    return EXIT_OK


def _agent_owns(port: str, args: argparse.Namespace) -> str | None:
    """The agent's bus on ``port``, if an agent answers on the socket and owns it."""
    try:
        with _client(args) as c:
            status: schema.Status = c.call("status")
    except ClientError:
        return None
    real = os.path.realpath(port) if os.path.exists(port) else port
    for b in status["buses"]:
        theirs = str(b.get("port", ""))
        if theirs == port or (os.path.exists(theirs) and os.path.realpath(theirs) == real):
            return str(b["id"])
    return None


def _bauds(text: str) -> list[int]:
    """``--bauds 9600,19200``: baud rates, or a usage error naming the bad one."""
    out = []
    for part in text.split(","):
        if not part.strip().isdigit() or not 50 <= int(part) <= 4_000_000:
            raise UsageError(f"--bauds: {part.strip()!r} is not a baud rate "
                             "(e.g. --bauds 9600,19200,38400)")
        out.append(int(part))
    return out


def cmd_scan(args: argparse.Namespace) -> int:
    """The bus doctor: which boards answer, at which settings, to which plugin."""
    import asyncio

    from edge_agent.config import vendor_settings
    from edge_agent.plugins import PluginHost
    from edge_agent.scan import scan

    bauds = _bauds(args.bauds) if args.bauds else None  # before anything is borrowed
    port = args.port
    loan: dict[str, Any] | None = None
    if args.borrow:
        if not args.reason:
            raise UsageError("--borrow needs --reason: the loan goes into the audit log")
        with _client(args) as c:
            loan = c.call("lend_bus", id=args.borrow,
                          body={"reason": args.reason, "seconds": args.loan_seconds})
        assert loan is not None
        port = port or loan["port"]
        print(f"borrowed bus {args.borrow} ({loan['port']}) from the agent "
              f"(audit #{loan['audit_seq']}); its boards are offline until it is back",
              file=sys.stderr)
    elif not port:
        raise UsageError("name the port (or --borrow BUS to scan one the agent owns)")
    elif (owner := _agent_owns(port, args)) is not None:
        raise UsageError(f"the agent owns {port} (bus {owner}): two masters on one wire "
                         f"talk over each other; borrow it: --borrow {owner} --reason ...")
    config = None
    if args.site:
        config = _load_config(args.site)
    host = PluginHost()
    host.load_entry_points()
    try:
        async def run() -> list[Any]:
            probes = await host.call_each("edge_agent_bus_probes")
            schemas = await host.call_each("edge_agent_settings_schema")
            chosen = [(name, p) for name, ps in sorted(probes.items()) for p in ps or []
                      if not args.protocol or p.protocol == args.protocol]
            if not chosen:
                raise UsageError("no installed plugin probes "
                                 + (repr(args.protocol) if args.protocol else "a bus"))
            settings = {name: vendor_settings(config, name, schemas.get(name))
                        if config is not None else
                        {k: v[1] for k, v in (schemas.get(name) or {}).items()}
                        for name, _ in chosen}
            return await scan(port, chosen, settings, bauds=bauds)

        trials = asyncio.run(run())
    finally:
        host.shutdown()
        if loan is not None and args.borrow:
            with _client(args) as c:
                back = c.call("return_bus", id=args.borrow, body={"reason": "scan done"})
            print(f"gave bus {args.borrow} back to the agent (audit #{back['audit_seq']})",
                  file=sys.stderr)
    if args.json:
        print(json.dumps([t.to_json() for t in trials], indent=2))
    else:
        rows = []
        for t in trials:
            found = ", ".join(f["address"].rsplit(" ", 2)[-1] if " board " in f["address"]
                              else f["address"] for f in t.found) or "-"
            rtts = [f["rtt_ms"] for f in t.found if f["rtt_ms"] is not None]
            rows.append([t.settings, t.plugin, t.protocol, len(t.found), found[:40],
                         f"{min(rtts):.1f}-{max(rtts):.1f}" if rtts else "-",
                         t.timeouts, t.rx_bytes, t.error[:40]])
        print(_table(rows, ["LINE", "PLUGIN", "PROTOCOL", "BOARDS", "WHICH", "RTT MS",
                            "SILENT", "RX BYTES", "ERROR"]))
        best = max(trials, key=lambda t: len(t.found), default=None)
        if best is not None and best.found:
            print(f"\n{len(best.found)} board(s) answer at {best.settings} to {best.plugin} "
                  f"({best.protocol}): " + ", ".join(f["identity"] for f in best.found))
        else:
            print("\nno board answered at any line setting: check power, wiring (A/B), "
                  "termination, and that the port is the bus")
    return EXIT_OK if any(t.found for t in trials) else EXIT_RUNTIME


def cmd_logs(args: argparse.Namespace) -> int:
    """The agent's recent log lines (its ring), over the socket: no root, no journal."""
    from edge_agent.logs import line_text

    after = 0
    with _client(args) as c:
        lines: list[dict[str, Any]] = c.call("logs", device=args.device, level=args.level,
                                             limit=args.limit)
        while True:
            for line in lines:
                print(json.dumps(line) if args.json else line_text(line), flush=True)
                after = max(after, int(line["seq"]))
            if not args.follow:
                return EXIT_OK
            try:
                time.sleep(0.5)
            except KeyboardInterrupt:
                return EXIT_OK
            lines = c.call("logs", device=args.device, level=args.level, after=after,
                           limit=1000)


def cmd_events(args: argparse.Namespace) -> int:
    if args.output and not args.format:
        # Never print to the terminal what was asked for in a file.
        suffix = Path(args.output).suffix.lower().lstrip(".")
        if suffix not in ("csv", "jsonl"):
            raise UsageError(f"--output {args.output}: say --format csv or --format jsonl "
                             "(or name the file .csv or .jsonl)")
        args.format = suffix
    if args.state_dir:
        return _events_offline(args)
    if args.follow:
        wanted = {k: v for k, v in _event_params(args).items() if v is not None
                  and k in ("device", "action", "actor", "item", "compartment")}

        try:
            with _client(args) as c:
                for kind, data in c.stream():
                    # Every filter the listing takes applies to the live tail too.
                    if kind == "audit" and all(str(data.get(k)) == str(v)
                                               for k, v in wanted.items()):
                        print(json.dumps(data) if args.json else _event_line(data),
                              flush=True)
        except KeyboardInterrupt:
            pass
        return EXIT_OK
    if args.format:
        with contextlib.ExitStack() as stack:
            out = (stack.enter_context(open(args.output, "wb")) if args.output
                   else sys.stdout.buffer)
            with _client(args) as c, _progress_bar(
                    "exporting", enabled=bool(args.output)) as progress:
                n = c.download(path("events_export"), out, progress=progress,
                               format=args.format, **_event_params(args))
        if args.output:
            print(f"wrote {n} bytes to {args.output}", file=sys.stderr)
        return EXIT_OK
    with _client(args) as c:
        events: list[schema.AuditRecord] = c.call("events", limit=args.limit,
                                                  **_event_params(args))
        devices: list[schema.Device] = c.call("devices") if args.device and not events \
            else []
    if args.json:
        print(json.dumps(events, indent=2))
        return EXIT_OK
    for e in events:
        print(_event_line(e))
    if not events:
        # Say so on stderr (stdout stays empty for scripts); a device this site does not
        # have is a mistyped name: the closest one, and exit 1.
        ids = [d["id"] for d in devices]
        if args.device and args.device not in ids:
            _print_err(f"no events: no device {args.device!r} here"
                       + _did_you_mean(args.device, ids) + " (see 'edge-agent devices')")
            return EXIT_RUNTIME
        _print_err("no events match")
    return EXIT_OK


def _did_you_mean(name: str, names: list[str]) -> str:
    """'; did you mean X?' for the closest of ``names`` (case ignored), or ''."""
    by_lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"; did you mean {by_lower[close[0]]!r}?" if close else ""


def _audit_dir(args: argparse.Namespace) -> Path:
    if args.state_dir:
        state = Path(args.state_dir)
    elif args.site:
        state = default_state_dir(_load_config(args.site))
    else:
        raise UsageError("name the state directory: --state-dir DIR (or --site FILE)")
    audit = state / "audit"
    if not audit.is_dir():
        raise UsageError(f"no audit log in {state} (expected {audit}/)")
    return audit


@contextlib.contextmanager
def _progress_bar(what: str, *, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr while a long walk runs, only when stderr is a terminal
    (nothing extra when piped, logged or with --json). Yields the callback to feed it
    (done, total) in bytes, or None."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress(f"[bold]{what}", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)  # 0: not known

        yield update


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from edge_agent.store.verify import load_key, verify

    audit = _audit_dir(args)
    on_box = audit / "verify.key"
    key = None
    if args.key:
        key_path = Path(args.key)
        if not key_path.exists():
            raise UsageError(f"no such key file: {args.key}")
        if on_box.exists() and key_path.samefile(on_box):
            # Root on the box can replace this file and re-seal a rewritten log with it.
            print(f"warning: {key_path} is the key on the box: it proves nothing against "
                  "whoever controls the box; pass the copy exported at installation",
                  file=sys.stderr)
        else:
            try:
                key = load_key(key_path)
            except (OSError, ValueError, KeyError) as exc:
                raise UsageError(f"cannot read the verify key {key_path}: {exc}") from exc
    exported = None
    if args.checkpoint:
        try:
            exported = json.loads(Path(args.checkpoint).read_text().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError) as exc:
            raise UsageError(f"cannot read checkpoint {args.checkpoint}: {exc}") from exc
        if not isinstance(exported, dict):
            raise UsageError(f"{args.checkpoint} does not hold a checkpoint")
    from edge_agent.store.audit import MIN_RETENTION_DAYS

    with _progress_bar("verifying", enabled=not args.json) as progress:
        report = verify(audit, key=key, exported=exported,
                        min_retention_days=args.min_retention_days or MIN_RETENTION_DAYS,
                        progress=progress)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        span = (f"records {report.first_seq}-{report.last_seq}" if report.records
                else "no records")
        print(f"{audit}: {report.records} {span}, {report.checkpoints} checkpoint(s), "
              f"{report.indexes_checked} index(es), MACs "
              f"{'checked with the exported key' if report.macs_checked else 'NOT checked'}")
        if report.copy:
            print("  headquarters' copy (fleet ingest): records and checkpoints as the site "
                  "forwarded them; the sealing key stays on the box")
        for f in report.findings:
            where = f" at seq {f.seq}" if f.seq is not None else ""
            print(f"  {f.kind.upper()}{where}: {f.message}")
        crash = (" (crash recovery noted above)"
                 if any(f.kind == "crash" for f in report.findings) else "")
        if report.verdict == "tampered":
            first = report.first_bad_seq
            print("TAMPERING DETECTED" + (f": first bad sequence number {first}"
                                          if first is not None else " (see above)"))
        elif report.verdict == "intact":
            print("OK: chain intact, authenticated with the exported key" + crash)
        else:
            print("NOT PROVEN: hashes and structure are consistent, but checkpoints were "
                  "not authenticated (no exported key); pass --key" + crash)
    return {"tampered": EXIT_RUNTIME, "intact": EXIT_OK}.get(report.verdict, EXIT_UNPROVEN)


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    from edge_agent.store.seal import read_checkpoints

    audit = _audit_dir(args)
    cps, _ = read_checkpoints(audit / "checkpoints.jsonl")
    valid = [c for c in cps if "epoch" in c]
    if not valid:
        raise EdgeAgentError(f"no checkpoint in {audit} yet (one is made every minute)")
    print(json.dumps(valid[-1], sort_keys=True))
    return EXIT_OK


def _event_line(e: schema.AuditRecord) -> str:
    from edge_agent.api.times import local

    parts = [f"#{e['seq']}", local(e["ts"]), e["action"]]
    if device := e.get("device"):
        parts.append(device + (f"/{e['compartment']}" if e.get("compartment") else ""))
    parts.append(f"by {e['actor']}")
    if e.get("reason"):
        parts.append(f"reason={e['reason']!r}")
    if e.get("outcome") and e["outcome"] != "ok":
        parts.append(f"outcome={e['outcome']}")
    return " ".join(parts)


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as c:
        st: schema.Status = c.call("status")
    if args.json:
        print(json.dumps(st, indent=2))
        return EXIT_OK
    d = st["devices"]
    print(f"site     {st['site']['id']} {st['site']['name']}")
    why = st.get("health_reason") or ""
    print(f"agent    {st['agent']['version']} pid {st['agent']['pid']} health {st['health']} "
          f"up {st['agent']['uptime']:.0f}s" + (f"\nhealth   {st['health']}: {why}" if why
                                                 else ""))
    counts = ", ".join(f"{k} {v}" for k, v in d.items() if k != "total")
    print(f"devices  {d['total']} ({counts or 'none'})")
    print(f"audit    last seq {st['audit']['last_seq']}"
          + (f"  ERROR: {st['audit']['error']}" if st["audit"]["error"] else ""))
    for b in st["buses"]:
        print(f"bus      {b['id']} {b['port']} {b['settings']} answering: "
              f"{len(b['answering'])}" + (f"  ERROR: {b['error']}" if b["error"] else ""))
    for a in st["alarms"]:
        acked = a.get("acked")
        seen = f"  (acknowledged by {acked['by']}: {acked['reason']})" if acked else ""
        print(f"ALARM    [{a['severity']}] {a['message']}{seen}  id {a['id']}")
    if st["inbox"]:
        print(f"inbox    {st['inbox']} discovered item(s) not adopted: see 'edge-agent inbox'")
    return EXIT_OK


def cmd_inbox(args: argparse.Namespace) -> int:
    """What discovery found and nobody adopted or ignored yet, with the ids adopt and
    ignore take."""
    from edge_agent.api.times import local

    items: list[schema.InboxItem] | None = _listing(
        args, "inbox", "the inbox is empty: every device found is adopted or ignored")
    if items is None:
        return EXIT_OK
    print(_table([[i["id"], i["what"], local(i["since"]), i["why"]] for i in items],
                 ["ITEM", "FOUND", "SINCE", "WHY"]))
    print("\nadopt:  edge-agent adopt ITEM --reason '…'   "
          "(ignore: edge-agent ignore ITEM --reason '…')")
    return EXIT_OK


def _local_plugins() -> list[dict[str, Any]]:
    from edge_agent.plugins import PluginHost

    host = PluginHost()
    host.load_entry_points()
    try:
        return [r.to_json() for r in sorted(host.records.values(), key=lambda r: r.name)]
    finally:
        host.shutdown()


def cmd_entitlements(args: argparse.Namespace) -> int:
    from edge_agent import entitlements as ent

    try:
        if args.ent_command == "keygen":
            priv, pub, kid = ent.keygen(Path(args.out))
            print(f"key {kid}: {priv} (private, 0600: keep it in the issuing office), {pub} "
                  f"(list it in each site's [entitlements] trusted_keys), "
                  f"{Path(args.out) / 'badge.key'} (0600: give it to the sites)")
            return EXIT_OK
        if args.ent_command == "sign":
            officers = ent.parse_records(Path(args.records),
                                         ent.load_badge_key(Path(args.badge_key)))
            doc = ent.sign(ent.load_private(Path(args.key)), officers, args.valid_hours)
            Path(args.out).write_bytes(ent.canonical(doc) + b"\n")
            snap = doc["snapshot"]
            print(f"signed {snap['id']}: {len(officers)} officer(s), key {doc['key_id']}, "
                  f"expires {snap['expires']} -> {args.out}")
            return EXIT_OK
    except ent.EntitlementError as exc:
        raise UsageError(str(exc)) from exc
    if args.ent_command == "load":
        try:
            doc = json.loads(Path(args.file).read_bytes())
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {args.file}: {exc}") from exc
        with _client(args) as c:
            result: schema.EntitlementsSummary = c.call("entitlements_load", body=doc)
    else:
        with _client(args) as c:
            result = c.call("entitlements")
    if args.json:
        print(json.dumps(result, indent=2))
    elif not result.get("loaded"):
        print(f"no entitlements in force: {result.get('problem')}")
    else:
        print(f"entitlements {result['id']}: {result['officers']} officer(s), issued "
              f"{result['issued']}, expires {result['expires']}, key {result['key_id']}"
              + (f" (audit #{result['audit_seq']})" if result.get("audit_seq") else ""))
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    note = ""
    if args.local:
        plugins = _local_plugins()
    else:
        try:
            with _client(args) as c:
                plugins = c.call("plugins")
        except ClientError as exc:
            if args.socket:
                raise
            plugins = _local_plugins()
            note = f"(agent not reachable: {exc}; showing plugins installed here)"
    if args.json:
        print(json.dumps(plugins, indent=2))
        return EXIT_OK
    if note:
        print(note, file=sys.stderr)
    def note_of(p: dict[str, Any]) -> str:
        if p["reason"]:
            return str(p["reason"])
        if p.get("faults"):
            return f"{p['faults']} fault(s), last: {p.get('last_fault') or '?'}"
        return str(p["description"] or "")

    rows = [(p["name"], p["status"], p["version"] or "-", p["contract"] or "-",
             p["vendor"] or "-", note_of(p)) for p in plugins]
    print(_table(rows, ["PLUGIN", "STATUS", "VERSION", "CONTRACT", "VENDOR", "NOTE"]))
    return EXIT_OK


def cmd_plugin_new(args: argparse.Namespace) -> int:
    from edge_agent.template import TemplateError, new_plugin

    try:
        root = new_plugin(args.name, Path(args.dir), vendor=args.vendor)
    except TemplateError as exc:
        raise UsageError(str(exc)) from exc
    print(f"created {root}\n\nnext:\n  cd {root}\n  pip install -e '.[test]'\n  pytest"
          f"\n  edge-agent plugins --local\n\nthen read {root / 'README.md'}")
    return EXIT_OK


def cmd_unlock(args: argparse.Namespace) -> int:
    if not args.reason.strip():
        raise UsageError("--reason must say why the compartment is being opened")
    body: schema.UnlockRequest = {"compartment": args.compartment, "reason": args.reason}
    with _client(args) as c:
        result: schema.UnlockAnswer = c.call("unlock", id=args.device, body=body)
    if result.get("waiting"):
        # A weapon compartment: this call was the first armourer's; nothing opened.
        print(json.dumps(result, indent=2) if args.json else
              f"NOT OPENED YET: {result['waiting']} (audit #{result['audit_seq']})")
        return EXIT_RUNTIME
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        st = result.get("state")
        door, item = (st["door"], st["item"]) if st else ("?", "?")
        print(f"unlocked {result['device']} compartment {result['compartment']} "
              f"(door {door}, item {item}); "
              f"audit #{result['audit_seq']} by {result['actor']}")
    return EXIT_OK


def cmd_decide(args: argparse.Namespace) -> int:
    """adopt, ignore, identify, out-of-service and return-to-service: what the dashboard
    does, from a shell (each audited with the caller and, where asked, the reason)."""
    what = args.decision
    reason = getattr(args, "reason", None)
    if reason is not None and not reason.strip():
        raise UsageError("--reason must say why: it goes into the audit log")
    body: dict[str, Any]
    if what in ("adopt", "ignore", "unignore"):
        route, body = what, {"reason": reason}
        expect = {k: v for k, v in (("serial", getattr(args, "expect_serial", None)),
                                    ("fingerprint", getattr(args, "expect_fingerprint", None)))
                  if v}
        if expect:
            body["expect"] = expect
    elif what == "identify":
        route, body = "identify", {}
    elif what == "ack":
        route, body = "ack_alarm", {"reason": reason}
    else:
        route = "out_of_service"
        body = {"compartment": args.compartment, "reason": reason,
                "out": what == "out-of-service"}
    with _client(args) as c:
        result = c.call(route, id=args.target, body=body)
    if args.json:
        print(json.dumps(result, indent=2))
        return EXIT_OK
    seq = result.get("audit_seq")
    if result.get("waiting"):  # re-adopting an armoury device: the first of two people
        print(f"{result['waiting']} (audit #{seq} by {result.get('actor')})")
        return EXIT_OK
    pins = result.get("pins") or {}
    pinned = ", ".join(f"{k} {v}" for k, v in (("serial", pins.get("serial")),
                                                ("key", pins.get("fingerprint"))) if v)
    done = {"adopt": f"adopted {args.target}" + (f" (pinned: {pinned})" if pinned else ""),
            "ignore": f"ignored {args.target}",
            "unignore": f"{args.target} is in the inbox again (not adopted)",
            "identify": f"asked {args.target} to identify itself",
            "ack": f"acknowledged {args.target} (it stays until its cause clears)",
            "out-of-service": f"{args.target} compartment {getattr(args, 'compartment', '')} "
                              "is out of service (unlocks refused)",
            "return-to-service": f"{args.target} compartment "
                                 f"{getattr(args, 'compartment', '')} is back in service"}[what]
    told = result.get("device_told")
    print(done + (f"; the device itself: {told}" if isinstance(told, str) else "")
          + f"; audit #{seq} by {result.get('actor')}")
    return EXIT_OK


def _csv_out(rows: list[dict[str, Any]], columns: list[str], output: str | None) -> None:
    import csv

    with contextlib.ExitStack() as stack:
        f = stack.enter_context(open(output, "w", newline="", encoding="utf-8")) \
            if output else sys.stdout
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def cmd_report(args: argparse.Namespace) -> int:
    """Management information from the agent: custody, overdue, deployable, usage, person."""
    if args.output and args.format != "csv":
        raise UsageError("--output needs --format csv")
    now = time.time()
    with _client(args) as c:
        if args.report in ("custody", "overdue"):
            view: schema.Custody = c.call("custody")
            rows: list[dict[str, Any]] = [
                {**h, "where": f"{h['device']}/{h['compartment']}", "since_at": _when(h["since"]),
                 "due_at": _when(h["due"]),
                 "status": "OVERDUE" if h["due"] < now else "out"}
                for h in view["holdings"] if args.report == "custody" or h["due"] < now]
            columns = ["officer", "name", "equipment", "where", "item", "since_at", "due_at",
                       "status"]
            title = ("who holds what (overdue first)" if args.report == "custody"
                     else "overdue items")
        elif args.report == "deployable":
            if not args.equipment:
                raise UsageError("report deployable needs --equipment CLASS (e.g. taser)")
            dep: schema.Deployable = c.call("deployable", equipment=args.equipment)
            if args.json:
                print(json.dumps(dep, indent=2))
                return EXIT_OK
            rows = dep["officers"]
            columns = ["officer", "name", "qualified_until", "holds"]
            where = ", ".join(f"{k} {v}" for k, v in dep["available"].items()) or "none"
            title = (f"deployable for {args.equipment} (available: {where}"
                     + ("; entitlements are NOT current" if dep["stale_entitlements"] else "")
                     + ")")
        elif args.report == "person":
            if not args.officer:
                raise UsageError("report person needs --officer ID (e.g. PC-1001)")
            who: schema.Person = c.call("person", id=args.officer)
            if args.json:
                print(json.dumps(who, indent=2))
                return EXIT_OK
            quals = ", ".join(f"{k} until {q['until']}" + ("" if q["valid"] else " EXPIRED")
                              for k, q in who["qualifications"].items()) or "none"
            rows = [{**h, "where": f"{h['device']}/{h['compartment']}",
                     "due_at": _when(h["due"]),
                     "status": "OVERDUE" if h["due"] < now else "out"}
                    for h in who["holdings"]]
            columns = ["equipment", "where", "item", "due_at", "status"]
            title = (f"{who['officer']} {who['name']}: qualifications {quals}"
                     + ("" if who["in_snapshot"] else
                        "; NOT in the entitlements in force")
                     + f"; holds {len(rows)}")
        else:
            return _usage_report(c, args, now)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        _csv_out(rows, columns, args.output)
    else:
        print(title)
        print(_table([[r.get(k) if r.get(k) is not None else "-" for k in columns]
                      for r in rows], [k.upper() for k in columns]) if rows else "  none")
    return EXIT_OK


def _usage_report(c: SocketClient, args: argparse.Namespace, now: float) -> int:
    """Issues per hour of the day per class, over the last N days, from the audit trail."""
    from edge_agent.api import usage

    events: list[schema.AuditRecord] = c.call("events", action=usage.ACTION,
                                              since=usage.since(args.days, now),
                                              limit=100_000)
    counts = usage.per_hour(events)
    rows = [{"equipment": k, "hour": h, "issues": n} for k, v in counts.items()
            for h, n in enumerate(v)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if args.format == "csv":
        _csv_out(rows, ["equipment", "hour", "issues"], args.output)
        return EXIT_OK
    total = sum(sum(v) for v in counts.values())
    print(f"issues per hour of the day, last {args.days:g} days: {total} in all")
    if not counts:
        print("  none")
        return EXIT_OK
    print(usage.chart(counts, min(shutil_width(), 100), 18,
                      colour=not os.environ.get("NO_COLOR")))
    return EXIT_OK


def shutil_width() -> int:
    import shutil

    return shutil.get_terminal_size((100, 24)).columns


# Only these leave the box in a support bundle (an allow-list: what is not named stays).
BUNDLE_RECORD_FIELDS = ("seq", "ts", "action", "device", "compartment", "outcome", "prev",
                        "hash", "boot")
BUNDLE_CONFIG = {
    "site": ("id", "name"), "agent": "*", "discovery": "*", "audit": "*", "custody": "*",
    "buses": ("id", "port", "protocol", "baudrate", "bytesize", "parity", "stopbits"),
    "devices": ("plugin", "identity", "model", "address"),
    "stations": ("id", "reader", "slots"), "policy": "*", "plugins": "*",
    "uplink": ("broker", "topic_prefix", "status_interval", "disk_budget_mb"),
}


def _redact_config(path: Path) -> dict[str, Any]:
    import tomllib

    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    out: dict[str, Any] = {}
    for section, allowed in BUNDLE_CONFIG.items():
        value = raw.get(section)
        if value is None:
            continue
        pick = (lambda d: d) if allowed == "*" else (
            lambda d, keys=allowed: {k: v for k, v in d.items() if k in keys})
        out[section] = [pick(v) for v in value] if isinstance(value, list) else pick(value)
    out["vendor"] = {name: sorted(table) for name, table in raw.get("vendor", {}).items()}
    return out


def _redact_record(rec: dict[str, Any], devices: set[str]) -> dict[str, Any]:
    out = {k: rec[k] for k in BUNDLE_RECORD_FIELDS if k in rec}
    actor = str(rec.get("actor", ""))
    out["actor"] = actor if actor == "agent" or actor in devices else (
        "officer" if actor.startswith("officer:") else "person")
    return out


def cmd_bundle(args: argparse.Namespace) -> int:
    """A support bundle a vendor can act on, with nothing personal or secret in it."""
    import io
    import itertools
    import platform
    import tarfile

    from edge_agent.store.audit import record_hash

    files: dict[str, Any] = {}
    with _client(args) as c:
        status: schema.Status = c.call("status")
        devices: list[schema.Device] = c.call("devices")
        plugins: list[schema.Plugin] = c.call("plugins")
        inbox: list[schema.InboxItem] = c.call("inbox")
        events: list[schema.AuditRecord] = c.call("events", limit=args.events)
        wires = {d["id"]: c.call("wire", id=d["id"], limit=2000)
                 for d in devices if d.get("bus_id")}
    ids = {d["id"] for d in devices}
    # The chain proof is computed here, where the full records are; only hashes leave.
    broken = [e["seq"] for e in events if record_hash(dict(e)) != e["hash"]]
    links = [b["seq"] for a, b in itertools.pairwise(events) if b["prev"] != a["hash"]]
    files["versions.json"] = {"edge_agent": __version__, "python": platform.python_version(),
                              "platform": platform.platform(),
                              "plugins": [{k: p.get(k) for k in ("name", "status", "version",
                                                                   "contract", "faults",
                                                                   "last_fault")}
                                          for p in plugins]}
    files["status.json"] = {
        **{k: status.get(k) for k in ("site", "agent", "devices", "audit", "store", "buses",
                                      "mdns", "health", "api")},
        "uplink": {k: v for k, v in (status.get("uplink") or {}).items() if k != "broker"},
        "alarms": [{**a, "message": a["message"] if not a["id"].startswith("custody:")
                    else "(custody alarm: names withheld)"} for a in status["alarms"]]}
    files["devices.json"] = [{k: d.get(k) for k in (
        "id", "plugin", "vendor", "model", "source", "address", "bus_id", "link", "error",
        "since", "reason", "counters", "capabilities", "diagnostics", "compartments",
        "alarms", "out_of_service")} for d in devices]
    for d in files["devices.json"]:  # who took a compartment out of service stays here
        d["out_of_service"] = sorted(d["out_of_service"] or {})
    files["inbox.json"] = [{k: i.get(k) for k in ("id", "what", "why", "since")}
                           for i in inbox]
    files["events.jsonl"] = "\n".join(json.dumps(_redact_record(dict(e), ids))
                                       for e in events)
    files["chain.json"] = {"records": len(events),
                           "first_seq": events[0]["seq"] if events else None,
                           "last_seq": events[-1]["seq"] if events else None,
                           "hashes_recomputed_ok": not broken, "bad_hash_seqs": broken,
                           "links_ok": not links, "broken_link_seqs": links}
    for dev, wire in wires.items():
        files[f"wire/{dev.replace(':', '_')}.json"] = wire
    if args.site:
        files["site-config.json"] = _redact_config(Path(args.site))
    with tarfile.open(args.output, "w:gz") as tar:
        for name, content in files.items():
            data = (content if isinstance(content, str) else
                    json.dumps(content, indent=1, default=str)).encode()
            info = tarfile.TarInfo(f"edge-agent-bundle/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o640
            tar.addfile(info, io.BytesIO(data))
    print(f"wrote {args.output}: {len(files)} file(s), {len(events)} audit record(s) "
          f"(chain {'intact' if not broken and not links else 'BROKEN'}); names, badges, "
          "reasons, keys and passwords are not in it")
    return EXIT_OK


def cmd_capture(args: argparse.Namespace) -> int:
    """Both directions of a device's bus, with timestamps, as a pcap Wireshark opens."""
    from edge_agent import pcap

    seen: dict[tuple[float, str, str], bytes] = {}
    deadline = time.monotonic() + args.seconds
    with _client(args) as c:
        while True:
            wire: schema.Wire = c.call("wire", id=args.device, limit=10_000)
            if wire["bus"] is None:
                raise UsageError(f"{args.device} is not on a serial bus the agent owns "
                                 "(network devices: capture their TCP port with tcpdump)")
            for f in wire["frames"]:
                if f["hex"]:
                    seen[(f["t"], f["dir"], f["hex"])] = bytes.fromhex(f["hex"])
            if time.monotonic() >= deadline:
                break
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    chunks = sorted((t, d, data) for (t, d, _h), data in seen.items())
    with open(args.output, "wb") as out:
        n = pcap.write(out, chunks)
    print(f"wrote {n} chunk(s) of bus {wire['bus']} ({args.device}) to {args.output}: open "
          "it in Wireshark (RTAC Serial; Decode As... for the payload)")
    return EXIT_OK


def cmd_uplink(args: argparse.Namespace) -> int:
    """The site's link to headquarters, from the agent's status."""
    with _client(args) as c:
        st: schema.Status = c.call("status")
    up = st.get("uplink")
    if args.json:
        print(json.dumps(up, indent=2))
        return EXIT_OK if up and up["connected"] else EXIT_RUNTIME
    if not up:
        print("no uplink configured ([uplink] broker = \"mqtts://...\" in the site config)")
        return EXIT_RUNTIME
    state = "connected" if up["connected"] else f"NOT connected ({up['error'] or '?'})"
    print(f"uplink   {up['broker']}: {state}, session {up['session']}")
    print(f"backlog  {up['backlog']} record(s) not yet acknowledged by the broker "
          f"(forwarded up to seq {up['acked_seq']}; {up['sent']} sent since start)")
    return EXIT_OK if up["connected"] else EXIT_RUNTIME


def _fleet_status(args: argparse.Namespace) -> int:
    """Every site at a glance, worst first, from ingest's output directory."""
    from edge_agent.api.fleetview import fleet
    from edge_agent.api.times import ago

    out = Path(args.out)
    if not out.is_dir():
        raise UsageError(f"{out}: no such directory (the --out of 'edge-agent fleet ingest')")
    rows = fleet(out)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_table([[r["site"], r["state"], len(r["alarms"]),
                       "-" if r["backlog"] is None else r["backlog"],
                       ago(r["oldest_unsent_s"]), ago(r["status_age_s"]),
                       r["entitlements"] or "-", r["last_seq"],
                       (r["problems"][0] if r["problems"] else
                        r["alarms"][0] if r["alarms"] else "")[:60]] for r in rows],
                     ["SITE", "STATE", "ALARMS", "BACKLOG", "OLDEST", "STATUS", "SNAPSHOT",
                      "SEQ", "FIRST PROBLEM"]) if rows else "no sites yet")
    return EXIT_RUNTIME if any(r["state"] in ("TAMPERED", "DEAD", "STOPPED")
                               for r in rows) else EXIT_OK


def cmd_fleet(args: argparse.Namespace) -> int:
    """Headquarters: take every site's records off the broker into OUT/<site>/, or sign
    a command for the sites."""
    if args.fleet_command == "sign-command":
        from edge_agent import entitlements as ent

        try:
            doc = ent.sign_command(ent.load_private(Path(args.key)), args.kind,
                                   [s.strip() for s in args.sites.split(",") if s.strip()],
                                   args.reason)
        except ent.EntitlementError as exc:
            raise UsageError(str(exc)) from exc
        Path(args.out).write_bytes(ent.canonical(doc) + b"\n")
        print(f"signed {args.kind} for {args.sites} -> {args.out} (publish it to "
              f"PREFIX/all/command or PREFIX/<site>/command)")
        return EXIT_OK
    if args.fleet_command == "status":
        return _fleet_status(args)
    import asyncio
    import signal

    from edge_agent.fleet import Ingest

    setup_logging(args.log_level)
    try:
        ingest = Ingest(args.broker, Path(args.out), prefix=args.prefix, ca=args.ca,
                        cert=args.cert, key=args.key)
    except EdgeAgentError as exc:
        raise UsageError(str(exc)) from exc

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if args.seconds:
            loop.call_later(args.seconds, stop.set)
        await ingest.run(stop)

    asyncio.run(main())
    sites = [s.to_json() for s in sorted(ingest.sites.values(), key=lambda s: s.root.name)]
    if args.json:
        print(json.dumps(sites, indent=2))
    else:
        for s in sites:
            print(f"{s['site']}: up to seq {s['last_seq']}, {s['duplicates_dropped']} "
                  f"duplicate(s) dropped, {s['gaps_waiting']} waiting"
                  + "".join(f"\n  PROBLEM: {p}" for p in s["problems"]))
    return EXIT_RUNTIME if any(s["problems"] for s in sites) else EXIT_OK


def _check_trusted_keys(config: SiteConfig, path: str, source: str) -> list[str]:
    """What `run` would refuse at start: each trusted key must be an Ed25519 public key
    (paths are relative to the config file)."""
    if not config.entitlements.trusted_keys:
        return []
    from edge_agent.config import _line_for, key_lines
    from edge_agent.entitlements import EntitlementError, load_public

    line = _line_for(("entitlements", "trusted_keys"), key_lines(source))
    where = f"{path}:{line}" if line else path
    problems = []
    for i, key in enumerate(config.entitlements.trusted_keys):
        try:
            load_public(Path(path).parent / key)
        except EntitlementError as exc:
            problems.append(f"{where}: entitlements.trusted_keys[{i}]: {exc}")
    return problems


def cmd_config_check(args: argparse.Namespace) -> int:
    from edge_agent.config import (
        check_bus_protocols,
        check_plugins_named,
        check_vendor_settings,
        unsafe_paths,
    )
    from edge_agent.plugins import PluginHost

    path = args.file
    config = _load_config(path)
    host = PluginHost()
    host.load_entry_points()
    schemas = {n: host.call_one_sync(n, "edge_agent_settings_schema") for n in host.loaded()}
    source = Path(path).read_text(encoding="utf-8")
    problems = check_vendor_settings(config, path, source, schemas)
    problems += check_plugins_named(config, path, source, set(schemas))
    probes = {n: host.call_one_sync(n, "edge_agent_bus_probes") for n in host.loaded()}
    problems += check_bus_protocols(config, path, source, {
        p.protocol for ps in probes.values() for p in ps or []})
    problems += _check_trusted_keys(config, path, source)
    problems += unsafe_paths(config, path)
    host.shutdown()
    if problems:
        raise ConfigError(path, problems)
    mdns = config.discovery.mdns
    print(f"{path}: OK (site {config.site.id}: {len(config.buses)} bus(es), "
          f"{len(config.devices)} static device(s), mDNS "
          f"{'on ' + ','.join(mdns.interfaces) if mdns.enabled else 'off'})")
    return EXIT_OK


# ---------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-agent",
        description="Site agent for smart equipment lockers and armoury cabinets.",
        epilog="Exit codes: 0 success, 1 runtime failure, 2 usage or config error.")
    p.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def client(name: str, help_: str, fn: Callable[[argparse.Namespace], int]
               ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--socket", help="agent API socket (default $EDGE_AGENT_SOCKET or "
                        f"{default_socket()})")
        sp.add_argument("--json", action="store_true", help="print JSON")
        sp.set_defaults(func=fn)
        return sp

    sp = sub.add_parser("run", help="run the agent (long-running)")
    sp.add_argument("--site", required=True, help="site config TOML")
    sp.add_argument("--state-dir", help="where the store and audit log live")
    sp.add_argument("--socket", help="API socket path (default STATE_DIR/agent.sock)")
    sp.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("demo", help="simulated site + agent + dashboard")
    sp.add_argument("--site", help="site config (default site_configs/demo.toml)")
    sp.add_argument("--headless", action="store_true", help="no dashboard: print what was found")
    sp.add_argument("--seconds", type=float, default=8.0, help="headless run time")
    sp.add_argument("--json", action="store_true", help="headless output as JSON")
    sp.add_argument("--serve", metavar="RUN_DIR", help=argparse.SUPPRESS)  # the inner half
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser("simulate", help="run only the simulated hardware of a site config, "
                        "or replay a capture's wire")
    sp.add_argument("--site")
    sp.add_argument("--replay", metavar="FILE", help="answer as the site's boards did in "
                    "this capture (edge-agent capture, .pcap) or support bundle (edge-agent "
                    "bundle, .tar.gz): reproduce a field fault on a desk")
    sp.add_argument("--link", help="with --replay: the pty symlink to create (the bus port)")
    sp.add_argument("--bus", help="with --replay of a bundle holding several buses: which")
    sp.add_argument("--control", help="control socket for 'edge-agent sim' (default "
                    "$EDGE_AGENT_RUN_DIR/sim.sock when that is set)")
    sp.set_defaults(func=cmd_simulate)

    sp = sub.add_parser("sim", help="act on running simulated hardware (simulate or demo)")
    ssub = sp.add_subparsers(dest="sim_command", required=True, metavar="ACTION")
    cp_ = ssub.add_parser("card", help="present a card (and keypad digits) at a simulated "
                          "reader")
    cp_.add_argument("reader", help="the reader's device id, e.g. osdp:RDR-00000001")
    cp_.add_argument("card", help="card number, hex digits")
    cp_.add_argument("--keys", help="keypad digits entered before the card")
    cp_.add_argument("--control", help="the simulators' control socket (default "
                     "$EDGE_AGENT_RUN_DIR/sim.sock)")
    cp_.add_argument("--json", action="store_true")
    cp_.set_defaults(func=cmd_sim)
    tp = ssub.add_parser("take", help="force a simulated compartment and take its item "
                         "(no unlock: what a custody station must catch)")
    tp.add_argument("port", help="the simulated bus's port, as `simulate` printed it")
    tp.add_argument("board", type=int)
    tp.add_argument("compartment", type=int)
    tp.add_argument("--control", help="the simulators' control socket")
    tp.add_argument("--json", action="store_true")
    tp.set_defaults(func=cmd_sim)

    client("devices", "list devices", cmd_devices)
    sp = client("events", "audit events: query, export, follow", cmd_events)
    sp.add_argument("--device")
    sp.add_argument("--compartment", type=int)
    sp.add_argument("--item", help="item or tag id")
    sp.add_argument("--actor", help="OS user, 'agent' or a device")
    sp.add_argument("--type", help="action, e.g. unlock, door_opened")
    sp.add_argument("--since", help="22:41 (today) or 2026-11-30T22:41 (local unless it "
                    "has an offset), inclusive")
    sp.add_argument("--until", help="the same forms, exclusive")
    sp.add_argument("--limit", type=int, default=50, help="newest N (default 50)")
    sp.add_argument("--format", choices=["jsonl", "csv"], help="export every match")
    sp.add_argument("--output", help="with --format: write to this file")
    sp.add_argument("-f", "--follow", action="store_true", help="follow live events")
    sp.add_argument("--state-dir", help="read this audit directory instead of asking the "
                    "agent (a stopped agent's state, or OUT/<site> of fleet ingest)")
    sp.set_defaults(site=None)
    client("status", "agent and site health", cmd_status)
    client("inbox", "devices found and not yet adopted or ignored (the ITEM ids)", cmd_inbox)
    sp = client("plugins", "loaded and refused plugins", cmd_plugins)
    sp.add_argument("--local", action="store_true", help="list plugins installed here, "
                    "without asking the agent")
    sp = client("unlock", "unlock one compartment", cmd_unlock)
    sp.add_argument("device")
    sp.add_argument("compartment", type=int)
    sp.add_argument("--reason", required=True)

    for name, help_ in (("adopt", "adopt a discovered device (a decision, audited)"),
                        ("ignore", "ignore a discovered device or inbox entry (persists)"),
                        ("unignore", "take an ignore back: in the inbox again, not adopted")):
        sp = client(name, help_, cmd_decide)
        sp.add_argument("target", metavar="ITEM", help="inbox id (see the inbox)")
        sp.add_argument("--reason", required=True)
        sp.set_defaults(decision=name)
        if name == "adopt":
            sp.add_argument("--expect-serial", metavar="SERIAL",
                            help="refuse unless the device presents this serial (its label)")
            sp.add_argument("--expect-fingerprint", metavar="SHA256",
                            help="refuse unless its key or certificate has this fingerprint")
    sp = client("scan", "the bus doctor: which boards answer on a serial bus, at which "
                "line settings, to which plugin (exit 1 if none)", cmd_scan)
    sp.add_argument("port", nargs="?", help="tty, pty or pyserial URL (socket://host:port)")
    sp.add_argument("--borrow", metavar="BUS", help="a bus the agent owns: lend it from the "
                    "agent for the scan (audited; its boards go offline meanwhile)")
    sp.add_argument("--reason", help="with --borrow: why (audited)")
    sp.add_argument("--loan-seconds", type=float, default=120.0,
                    help="with --borrow: the agent takes it back after this long (120)")
    sp.add_argument("--bauds", help="baud rates to try, comma-separated (default: the "
                    "probes' own, then 9600,19200,38400,57600,115200,4800,2400)")
    sp.add_argument("--protocol", help="only the probes of this protocol")
    sp.add_argument("--site", help="site config: its [vendor.*] settings for the probes")
    sp = client("logs", "the agent's recent log lines (no root needed where the socket "
                "allows), oldest first", cmd_logs)
    sp.add_argument("--device", help="only lines about this device")
    sp.add_argument("--level", choices=["debug", "info", "warning", "error"],
                    help="only this level and worse")
    sp.add_argument("--limit", type=int, default=200, help="the newest N (200)")
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    sp = client("ack", "acknowledge an alarm (who and why are audited; it stays raised "
                "until its cause clears)", cmd_decide)
    sp.add_argument("target", metavar="ALARM", help="alarm id (edge-agent status --json)")
    sp.add_argument("--reason", required=True)
    sp.set_defaults(decision="ack")
    sp = client("identify", "flash or beep a device, if it can", cmd_decide)
    sp.add_argument("target", metavar="DEVICE")
    sp.set_defaults(decision="identify")
    for name, help_ in (("out-of-service", "take a compartment out of service: unlocks "
                         "are refused until it returns (a decision, audited)"),
                        ("return-to-service", "put a compartment back in service")):
        sp = client(name, help_, cmd_decide)
        sp.add_argument("target", metavar="DEVICE")
        sp.add_argument("compartment", type=int)
        sp.add_argument("--reason", required=True)
        sp.set_defaults(decision=name)

    sp = client("report", "management information: custody, overdue, deployable, usage",
                cmd_report)
    sp.add_argument("report", choices=["custody", "overdue", "deployable", "usage", "person"])
    sp.add_argument("--officer", help="person: the officer's id")
    sp.add_argument("--equipment", help="deployable: the class, e.g. taser")
    sp.add_argument("--days", type=float, default=7.0, help="usage: how far back (7)")
    sp.add_argument("--format", choices=["table", "csv"], default="table")
    sp.add_argument("--output", help="with --format csv: write to this file")

    sp = client("bundle", "a support bundle for a vendor (nothing personal or secret)",
                cmd_bundle)
    sp.add_argument("--output", required=True, help="FILE.tar.gz")
    sp.add_argument("--site", help="the site config, to include (redacted by allow-list)")
    sp.add_argument("--events", type=int, default=500, help="newest audit records (500)")

    sp = client("capture", "a device's bus, both directions, as a pcap for Wireshark",
                cmd_capture)
    sp.add_argument("device")
    sp.add_argument("--output", required=True, help="FILE.pcap")
    sp.add_argument("--seconds", type=float, default=0.0,
                    help="keep collecting this long (default: what the ring holds now)")

    sp = sub.add_parser("uplink", help="the site's link to headquarters (MQTT)")
    usub = sp.add_subparsers(dest="uplink_command", required=True, metavar="ACTION")
    up_ = usub.add_parser("status", help="connected or not, backlog, session (exit 1 when "
                          "not connected)")
    up_.add_argument("--socket", help="agent API socket")
    up_.add_argument("--json", action="store_true")
    up_.set_defaults(func=cmd_uplink)

    sp = sub.add_parser("fleet", help="headquarters: collect every site's records from the "
                        "MQTT broker")
    fsub = sp.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    fp = fsub.add_parser("ingest", help="subscribe for all sites; verify each site's chain; "
                         "write OUT/<site>/ (exit 1 if a site shows tampering)")
    fp.add_argument("--broker", required=True, help="mqtt://host:port or mqtts://host:port")
    fp.add_argument("--out", required=True, help="directory for the per-site stores")
    fp.add_argument("--prefix", default="edge-agent", help="topic prefix (edge-agent)")
    fp.add_argument("--ca", help="mqtts: the CA that signed the broker's certificate")
    fp.add_argument("--cert", help="mqtts: headquarters' client certificate (PEM)")
    fp.add_argument("--key", help="mqtts: its private key (PEM)")
    fp.add_argument("--seconds", type=float, help="stop after this long (default: run until "
                    "SIGTERM or Ctrl-C)")
    fp.add_argument("--log-level", default="warning",
                    choices=["debug", "info", "warning", "error"])
    fp.add_argument("--json", action="store_true")
    fp.set_defaults(func=cmd_fleet)
    fp = fsub.add_parser("status", help="every site at a glance, worst first, from ingest's "
                         "output (exit 1 if a site is tampered with or dead)")
    fp.add_argument("--out", required=True, help="the --out directory of fleet ingest")
    fp.add_argument("--json", action="store_true")
    fp.set_defaults(func=cmd_fleet)
    fp = fsub.add_parser("sign-command", help="sign a lockdown or release of armoury issue "
                         "for sites (with the entitlements signing key)")
    fp.add_argument("--key", required=True, help="signing.key from entitlements keygen")
    fp.add_argument("--kind", required=True, choices=["lockdown", "release"])
    fp.add_argument("--sites", required=True, help="site ids, comma-separated, or *")
    fp.add_argument("--reason", required=True)
    fp.add_argument("--out", required=True)
    fp.set_defaults(func=cmd_fleet)

    sp = sub.add_parser("entitlements", help="signed training records: make, sign, load, "
                        "show")
    esub = sp.add_subparsers(dest="ent_command", required=True, metavar="ACTION")
    ep = esub.add_parser("keygen", help="make the issuing office's signing key and the "
                         "badge key")
    ep.add_argument("--out", required=True, help="a new directory for the keys")
    ep.set_defaults(func=cmd_entitlements)
    ep = esub.add_parser("sign", help="sign a CSV export of training records")
    ep.add_argument("--key", required=True, help="signing.key from keygen")
    ep.add_argument("--badge-key", required=True, help="badge.key from keygen")
    ep.add_argument("--records", required=True, help="CSV: officer_id,name,roles,badges,"
                    "qualifications")
    ep.add_argument("--valid-hours", type=float, required=True)
    ep.add_argument("--out", required=True)
    ep.set_defaults(func=cmd_entitlements)
    for name, help_ in (("load", "verify a signed snapshot and put it in force (audited)"),
                        ("show", "the snapshot in force")):
        ep = esub.add_parser(name, help=help_)
        if name == "load":
            ep.add_argument("file")
        ep.add_argument("--socket", help="agent API socket")
        ep.add_argument("--json", action="store_true")
        ep.set_defaults(func=cmd_entitlements)

    sp = sub.add_parser("audit", help="audit log tools (read the state directory directly)")
    asub = sp.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    ap = asub.add_parser("verify", help="check the hash chain, sealed checkpoints and "
                         "indexes; exit 0 intact (authenticated), 1 tampering, 2 usage, "
                         "3 not proven (no exported key)")
    ap.add_argument("--state-dir")
    ap.add_argument("--site", help="site config (to find its state directory)")
    ap.add_argument("--key", help="the verify.key exported at installation (a key read "
                    "from the box authenticates nothing)")
    ap.add_argument("--min-retention-days", type=float,
                    help="the shortest retention window the site may have had "
                    "(default: the least a site may configure, 30); a retention run "
                    "claiming less is tampering")
    ap.add_argument("--checkpoint", help="a checkpoint exported off the box")
    ap.add_argument("--json", action="store_true")
    ap.set_defaults(func=cmd_audit_verify)
    ap = asub.add_parser("checkpoint", help="print the newest sealed checkpoint, to export")
    ap.add_argument("--state-dir")
    ap.add_argument("--site")
    ap.set_defaults(func=cmd_audit_checkpoint)

    sp = sub.add_parser("plugin", help="tools for vendor plugin authors")
    psub = sp.add_subparsers(dest="plugin_command", required=True, metavar="ACTION")
    pp = psub.add_parser("new", help="generate an installable plugin package whose tests "
                         "pass as generated (codec, driver, simulator, conformance tests)")
    pp.add_argument("name", help="plugin name: lower-case, becomes the entry point")
    pp.add_argument("--dir", default=".", help="where to create edge-agent-NAME/ (default .)")
    pp.add_argument("--vendor", default="", help="vendor name shown to technicians")
    pp.set_defaults(func=cmd_plugin_new)

    sp = sub.add_parser("config", help="site config tools")
    csub = sp.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    cp = csub.add_parser("check", help="validate a site config")
    cp.add_argument("file")
    cp.set_defaults(func=cmd_config_check)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        _print_err("config is not valid; nothing was started")
        return EXIT_USAGE
    except UsageError as exc:
        _print_err(str(exc))
        return EXIT_USAGE
    except ClientError as exc:
        if getattr(args, "json", False):
            print(json.dumps(exc.to_json()))  # scripts asked for JSON: errors too
        else:
            _print_err(str(exc))
        # Something named that is not there (a device, a compartment, an inbox entry) or
        # a malformed argument: a usage error, as a bad argument caught here is.
        return EXIT_USAGE if exc.code in ("bad_request", "not_found", "no_such_compartment") \
            else EXIT_RUNTIME
    except EdgeAgentError as exc:
        _print_err(str(exc))
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
