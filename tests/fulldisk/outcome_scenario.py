"""Room for exactly one record: the unlock request fits on the disk, its outcome does not.
Run by test_full_disk.py with the state directory on a small tmpfs (``unshare -rm``).

tmpfs allocates whole pages: a write into the last, partly used page of the audit
segment needs no new space, anything past it does. So the scenario moves the segment's
end (one out-of-service record with a reason of a computed length) until the space left
in its last page holds the next ``unlock_requested`` record but not the ``unlock``
outcome after it, fills the disk, and unlocks. Prints a JSON summary."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from edge_agent_kerong.simulator import BusOptions, PtyEndpoint, SimBoard, SimBus
from scenario import fill, report

from edge_agent.errors import ClientError
from edge_agent.testing import running_agent, wait_device, wait_status

PAGE = 4096
DEV = "kerong:Bus-1:0"


def segment(state: Path) -> Path:
    return sorted((state / "audit").glob("audit-*.jsonl"))[-1]


def line_of(state: Path, seq: int) -> bytes:
    for raw in segment(state).read_bytes().splitlines(keepends=True):
        if json.loads(raw)["seq"] == seq:
            return raw
    raise AssertionError(f"no record {seq}")


async def main(state: Path) -> int:
    # Doors popped by an unlock stay open: no door observation competes for the space.
    sim = SimBus([SimBoard(0, items=0xFFFF)], BusOptions(pace=False, auto_close_s=1e6))
    ep = PtyEndpoint(sim)
    ep.start()
    toml = (f'[site]\nid = "fulldisk"\n[agent]\npoll_interval = 0.05\n'
            f'[audit]\ncheckpoint_every = 1000000\ncheckpoint_interval = 100000\n'
            f'[[buses]]\nid = "Bus-1"\nport = "{ep.port}"\nprotocol = "kerong-cu16"\n')
    out: dict[str, object] = {}
    unlock = f"/v1/devices/{DEV}/unlock"
    oos = f"/v1/devices/{DEV}/out-of-service"
    try:
        async with running_agent(toml, state) as (_agent, client):
            await wait_device(client, DEV)
            # Sizes of the two records an unlock writes, measured on a real one.
            r = await client.post(unlock, {"compartment": 1, "reason": "during"})
            outcome = line_of(state, r["audit_seq"])
            req_len = len(line_of(state, json.loads(outcome)["details"]["request_seq"]))
            out_len = len(outcome)
            o = await client.post(oos, {"compartment": 16, "reason": "x" * 10, "out": True})
            base = len(line_of(state, o["audit_seq"])) - 10
            # One back-in-service record whose reason leaves req_len + 40 bytes of page.
            want = req_len + 40
            while True:
                size = segment(state).stat().st_size
                n = (-(size + base) - want) % PAGE or PAGE
                if n <= 1900:  # a reason is at most 2000 characters: step there
                    break
                await client.post(oos, {"compartment": 16, "reason": "z" * 1500, "out": False})
            await client.post(oos, {"compartment": 16, "reason": "y" * n, "out": False})
            slack = -segment(state).stat().st_size % PAGE
            out["slack"], out["request_len"], out["outcome_len"] = slack, req_len, out_len
            if not req_len <= slack < req_len + out_len:
                raise AssertionError(f"could not set up the page: {out}")
            filler = state / "filler"
            await asyncio.to_thread(fill, filler)
            sent_before = len(sim.unlocks)
            try:
                r = await client.post(unlock, {"compartment": 1, "reason": "during"})
                out["answer"] = {"status": 200, **{k: r.get(k) for k in
                                                   ("audit_seq", "audit_pending")}}
            except ClientError as exc:
                out["answer"] = {"status": exc.status, "error": str(exc)}
            out["board_unlocks"] = len(sim.unlocks) - sent_before
            status = await client.get("/v1/status")
            out["health_after_outcome"] = status["health"]
            out["reserve_after_outcome"] = status["audit"]["reserve"]
            # The reserve is spent: the next command is refused before anything is sent.
            sent_before = len(sim.unlocks)
            try:
                await client.post(unlock, {"compartment": 2, "reason": "next"})
                out["next_answer"] = 200
            except ClientError as exc:
                out["next_answer"] = exc.status
            out["next_board_unlocks"] = len(sim.unlocks) - sent_before
            await asyncio.to_thread(filler.unlink)
            await wait_status(client, lambda st: st["audit"]["commands_refused"] is None,
                              timeout=20, what="the reserve held again")
            r = await client.post(unlock, {"compartment": 3, "reason": "after"})
            out["after_answer"] = r["audit_seq"] is not None
            events = await client.get("/v1/events", limit=10_000)
            out["outcomes"] = [{"reason": e["reason"], "outcome": e["outcome"],
                                "request_seq": e["details"].get("request_seq")}
                               for e in events if e["action"] == "unlock"]
            out["requests"] = {e["seq"]: e["reason"] for e in events
                               if e["action"] == "unlock_requested"}
    finally:
        ep.stop()
    return report(out, state / "audit")


if __name__ == "__main__":
    sys.exit(asyncio.run(main(Path(sys.argv[1]))))
