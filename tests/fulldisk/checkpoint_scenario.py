"""A checkpoint append that the disk cuts short. Run by test_full_disk.py with the audit
log on a small tmpfs (``unshare -rm``).

The log seals a checkpoint after every record. Records are appended until the next
checkpoint line will not fit in the last page of ``checkpoints.jsonl`` (tmpfs allocates
whole pages), the segment is left with room for one more record, and the disk is
filled: that record is written, its checkpoint is not (the write stops at the page
end). Then the disk is freed and logging goes on. Prints a JSON summary."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from scenario import fill, report

from edge_agent.store.audit import AuditLog
from edge_agent.store.seal import read_checkpoints
from edge_agent.testing import wait_until

PAGE = 4096


async def main(root: Path) -> int:
    audit = root / "audit"
    log = AuditLog(audit, boot_id="fulldisk", checkpoint_every=1, checkpoint_interval=3600,
                   reserve_bytes=0, retry_interval=0.2)
    await asyncio.to_thread(log.open)
    cps = audit / "checkpoints.jsonl"
    out: dict[str, object] = {}

    def sealed() -> int:
        return len(cps.read_bytes().splitlines()) if cps.exists() else 0

    def size() -> int:
        return cps.stat().st_size if cps.exists() else 0

    async def append(reason: str) -> None:
        before = size()
        await log.append({"action": "test_event", "reason": reason})
        await wait_until(lambda: size() > before, what="its checkpoint")

    await append("x" * 10)
    seg = sorted(audit.glob("audit-*.jsonl"))[-1]
    base = len(seg.read_bytes().splitlines()[-1]) - 10
    for _ in range(400):  # bounded: the page walk lands within a few laps
        cp_len = len(cps.read_bytes().splitlines()[-1]) + 1
        after = -(cps.stat().st_size + cp_len) % PAGE
        if 0 < after < cp_len - 40:
            # This record's checkpoint leaves too little page for the next one; leave
            # the segment 2,000 bytes of page for the next record.
            n = (-(seg.stat().st_size + base + 1) - 2000) % PAGE or PAGE
            await append("y" * n)
            break
        await append("z")
    else:
        raise AssertionError("could not set up the checkpoint page")
    epochs_before = sealed()
    filler = root / "filler"
    await asyncio.to_thread(fill, filler)
    rec = await log.append({"action": "test_event", "reason": "while full"})
    await asyncio.sleep(1.5)  # the writer tried to seal it (and failed: no new page)
    out["record_written"] = rec["seq"]
    out["checkpoint_lines_while_full"] = cps.read_bytes().count(b"\n") - epochs_before
    out["torn_bytes_while_full"] = len(cps.read_bytes()) - cps.read_bytes().rfind(b"\n") - 1
    await asyncio.to_thread(filler.unlink)
    await append("after")
    await asyncio.to_thread(log.close)
    lines, torn = read_checkpoints(cps)
    out["unreadable_lines"] = sum("unreadable" in c for c in lines) + int(torn)
    out["epochs"] = [c["epoch"] for c in lines if "epoch" in c]
    return report(out, audit)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(Path(sys.argv[1]))))
