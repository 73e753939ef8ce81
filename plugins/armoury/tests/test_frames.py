"""Recorded Modbus frames (data/frames.json, captured from the driver talking to
pymodbus's server): today's driver must send the same requests and decode the same
answers to the same state, with no simulator running."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from edge_agent_armoury.driver import decode_blocks
from edge_agent_armoury.profile import ProfileLibrary, state_reads
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.bit_message import ReadCoilsRequest, ReadDiscreteInputsRequest
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest, ReadInputRegistersRequest

SETS = json.loads((Path(__file__).parent / "data" / "frames.json").read_text())
REQUEST = {"coil": ReadCoilsRequest, "discrete": ReadDiscreteInputsRequest,
           "holding": ReadHoldingRegistersRequest, "input": ReadInputRegistersRequest}


def _framer(transport: str, *, responses: bool) -> Any:
    cls = FramerSocket if transport == "tcp" else FramerRTU
    return cls(DecodePDU(not responses))


@pytest.mark.parametrize("rec", SETS, ids=lambda r: f"{r['profile']}-{r['transport']}")
def test_requests_are_what_was_recorded(rec: dict[str, Any]) -> None:
    profile = ProfileLibrary().get(rec["profile"])
    reads = state_reads(profile)
    assert len(reads) == len(rec["exchanges"]), "the read plan changed"
    framer = _framer(rec["transport"], responses=False)
    for read, ex in zip(reads, rec["exchanges"], strict=True):
        recorded = bytes.fromhex(ex["tx"])
        tid = int.from_bytes(recorded[:2], "big") if rec["transport"] == "tcp" else 0
        pdu = REQUEST[read.table](dev_id=rec["unit"], transaction_id=tid,
                                  address=read.address, count=read.count)
        assert framer.buildFrame(pdu).hex() == ex["tx"], f"request for {read} changed"


@pytest.mark.parametrize("rec", SETS, ids=lambda r: f"{r['profile']}-{r['transport']}")
def test_recorded_answers_decode_to_the_recorded_state(rec: dict[str, Any]) -> None:
    profile = ProfileLibrary().get(rec["profile"])
    framer = _framer(rec["transport"], responses=True)
    values = []
    for read, ex in zip(state_reads(profile), rec["exchanges"], strict=True):
        _, pdu = framer.handleFrame(bytes.fromhex(ex["rx"]), 0, 0)
        assert pdu is not None and not pdu.isError(), ex["rx"]
        got = pdu.bits if read.table in ("coil", "discrete") else pdu.registers
        values.append(list(got)[: read.count])
    state = decode_blocks(profile, values)
    assert [{"index": c.index, "door": c.door.value, "item": c.item.value, "tag": c.tag}
            for c in state.compartments] == rec["compartments"]
    assert dict(state.details) == rec["details"]
    # The recorded cabinet: slot 2 empty, slot 4 an item without a tag, slot 3 open,
    # tamper on, main door open.
    comps = rec["compartments"]
    assert comps[1]["item"] == "absent" and comps[3]["tag"] is None
    assert comps[2]["door"] == "open" and rec["details"]["tamper"] is True


def test_garbage_and_truncated_answers_do_not_decode() -> None:
    rec = SETS[0]
    framer = _framer("tcp", responses=True)
    good = bytes.fromhex(rec["exchanges"][0]["rx"])
    _, pdu = framer.handleFrame(good[:-3], 0, 0)  # cut short: wait for more, no frame
    assert pdu is None
