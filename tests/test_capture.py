"""`edge-agent capture`: a device's bus, both directions, as a pcap file that a pcap
library (dpkt) reads back: LINKTYPE_RTAC_SERIAL, the RTAC header, the frames."""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import dpkt
from helpers import site_toml

from edge_agent.testing import running_agent, wait_device

DEV = "kerong:Bank-1:0"


async def test_capture_writes_a_pcap_wireshark_can_read(kerong_bus: Any,
                                                         tmp_path: Path) -> None:
    sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
    async with running_agent(site_toml({"Bank-1": pty.port}), tmp_path / "s") as (agent,
                                                                                  client):
        await wait_device(client, DEV)
        await client.call("unlock", id=DEV, body={"compartment": 5, "reason": "capture"})
        out = tmp_path / "bank.pcap"
        proc = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "edge_agent.cli", "capture", DEV, "--output", str(out),
            "--seconds", "1", "--socket", str(agent.socket_path)],
            capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    with open(out, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        assert reader.datalink() == 250  # LINKTYPE_RTAC_SERIAL
        records = [(ts, buf) for ts, buf in reader]
    assert len(records) > 4
    directions = set()
    payloads = []
    for ts, buf in records:
        sec, usec, event, _lines, _footer = struct.unpack(">IIBBH", buf[:12])
        assert abs(sec + usec / 1e6 - ts) < 1e-5  # the header's time is the record's
        directions.add(event)
        payloads.append(buf[12:])
    assert directions == {0x01, 0x02}  # both: requests out, replies in
    # The unlock of compartment 5 (lock index 4 on board 0) is on the wire as sent.
    from edge_agent_kerong import codec

    assert any(codec.encode_request(0, 4, codec.CMD_UNLOCK) in p for p in payloads)
    assert sim.unlocks == [(0, 4)]


async def test_the_wire_view_shows_frames_not_reads_over_a_tcp_bridge(kerong_bus: Any,
                                                                      tmp_path: Path) -> None:
    """Issue 13 item 3: behind a serial-over-TCP bridge (socket://) a reply arrives a byte
    or two at a time; the wire view must name the reply, not call its pieces garbage."""
    sim, tcp = kerong_bus({0: 0x00FF}, tcp=True, pace=False)
    async with running_agent(site_toml({"Bank-1": tcp.port}), tmp_path / "s") as (_agent,
                                                                                  client):
        await wait_device(client, DEV)
        await asyncio.sleep(1.0)
        wire = await client.call("wire", id=DEV, limit=200)
        rx = [f for f in wire["frames"] if f["dir"] == "rx" and f["hex"]]
        assert rx, wire["frames"][-5:]
        decoded = [f["decoded"] or "" for f in rx]
        assert not any("garbage" in d for d in decoded), decoded[-10:]
        assert any(d.startswith("status reply board 0") for d in decoded), decoded[-10:]
        assert sim.faults.garbage_rate == 0  # nothing was garbage to begin with
