"""Full-disk scenario, run by test_full_disk.py with the state directory on a small
tmpfs it mounts inside ``unshare -rm``. Prints a JSON summary; exits non-zero on error."""

from __future__ import annotations

import asyncio
import errno
import json
import sys
from pathlib import Path

from edge_agent_kerong.simulator import BusOptions, PtyEndpoint, SimBoard, SimBus

from edge_agent.errors import ClientError
from edge_agent.testing import running_agent, wait_device, wait_status


def fill(path: Path) -> int:
    """Write until the filesystem is full; return bytes written."""
    n = 0
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                n += f.write(b"\0" * 4096)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return n


def report(out: dict[str, object], audit: Path) -> int:
    """Add what ``audit verify`` says of the log (with the key it was made with), print
    the summary for the test, and exit 0."""
    from edge_agent.store.verify import load_key, verify

    rep = verify(audit, key=load_key(audit / "verify.key"))
    out["verify"] = rep.verdict
    out["findings"] = [f.message for f in rep.findings if f.kind != "warning"]
    print(json.dumps(out))
    return 0


async def main(state: Path) -> int:
    sim = SimBus([SimBoard(0, items=0xFFFF)], BusOptions(pace=False))
    ep = PtyEndpoint(sim)
    ep.start()
    toml = (f'[site]\nid = "fulldisk"\n[agent]\npoll_interval = 0.05\n'
            f'[[buses]]\nid = "bus"\nport = "{ep.port}"\nprotocol = "kerong-cu16"\n')
    out: dict[str, object] = {}
    acked: list[int] = []
    try:
        async with running_agent(toml, state) as (_agent, client):
            await wait_device(client, "kerong:bus:0")
            r = await client.post("/v1/devices/kerong:bus:0/unlock",
                                  {"compartment": 1, "reason": "before"})
            acked.append(r["audit_seq"])
            before = sim.unlocks[:]
            old_files = {p.name: p.read_bytes() for p in (state / "audit").glob("audit-*")}
            filler = state / "filler"
            out["filled_bytes"] = await asyncio.to_thread(fill, filler)
            # Kit moves while the disk is full: observations must not be lost. (The last
            # page of the open segment may still have room: move kit until it is used up.)
            sim.set_item(0, 5, False)
            for i in range(200):
                if (await client.call("status"))["audit"]["error"] is not None:
                    break
                sim.set_door(0, 10, closed=bool(i % 2))
                await asyncio.sleep(0.1)
            await wait_status(client, lambda st: st["audit"]["error"] is not None,
                              timeout=10, what="audit log notices the full disk")
            status = await client.get("/v1/status")
            out["health_when_full"] = status["health"]
            out["audit_error"] = status["audit"]["error"]
            try:
                await client.post("/v1/devices/kerong:bus:0/unlock",
                                  {"compartment": 2, "reason": "during"})
                out["unlock_when_full"] = "accepted"
            except ClientError as exc:
                out["unlock_when_full"] = f"refused {exc.status}: {exc}"
            out["unlocks_reaching_board_when_full"] = len(sim.unlocks) - len(before)
            out["reads_when_full"] = len(await client.get("/v1/devices"))
            out["events_readable_when_full"] = len(await client.get("/v1/events", limit=5))
            out["old_data_intact"] = all(
                (state / "audit" / name).read_bytes().startswith(data)
                for name, data in old_files.items())
            await asyncio.to_thread(filler.unlink)
            await wait_status(client, lambda st: st["audit"]["error"] is None, timeout=15,
                              what="audit log recovers by itself")
            status = await client.get("/v1/status")
            out["health_after"] = status["health"]
            r = await client.post("/v1/devices/kerong:bus:0/unlock",
                                  {"compartment": 3, "reason": "after"})
            acked.append(r["audit_seq"])
            events = await client.get("/v1/events", limit=1000)
            seqs = {e["seq"] for e in events}
            out["acked_missing"] = [s for s in acked if s not in seqs]
            out["item_removed_kept"] = any(e["action"] == "item_removed"
                                           and e["compartment"] == 6 for e in events)
            out["recovery_event"] = [e["details"] for e in events
                                     if e["action"] == "audit_log_recovered"]
            out["refused_audited"] = any(e["action"] == "unlock" and e["reason"] == "during"
                                         for e in events)
    finally:
        ep.stop()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(Path(sys.argv[1]))))
