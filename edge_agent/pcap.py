"""Wire captures Wireshark opens: pcap with LINKTYPE_RTAC_SERIAL (250).

Each record is one chunk seen on a serial line, in either direction: a 12-byte RTAC
serial header (arrival time as big-endian seconds and microseconds, an event type,
control lines, a footer) and the bytes. Wireshark's RTAC Serial dissector shows direction
and time, and can hand the bytes to its Modbus RTU dissector ("Decode As").
Standard library only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import BinaryIO

LINKTYPE_RTAC_SERIAL = 250
EVENT_TX, EVENT_RX = 0x01, 0x02  # RTAC "data TX start" / "data RX start"
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_RTAC = struct.Struct(">IIBBH")


def write(out: BinaryIO, chunks: Iterable[tuple[float, str, bytes]]) -> int:
    """Write ``(time, "tx"|"rx", bytes)`` chunks as a pcap file; returns how many."""
    out.write(_GLOBAL.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RTAC_SERIAL))
    n = 0
    for t, direction, data in chunks:
        sec, usec = int(t), round((t - int(t)) * 1e6) % 1_000_000
        body = _RTAC.pack(sec, usec, EVENT_TX if direction == "tx" else EVENT_RX, 0, 0) + data
        out.write(_RECORD.pack(sec, usec, len(body), len(body)) + body)
        n += 1
    return n


def read(data: bytes) -> list[tuple[float, str, bytes]]:
    """Read back what :func:`write` wrote (for tests and ``simulate --replay``)."""
    magic, _maj, _min, _tz, _sig, _snap, link = _GLOBAL.unpack_from(data, 0)
    if magic != 0xA1B2C3D4 or link != LINKTYPE_RTAC_SERIAL:
        raise ValueError("not an RTAC serial pcap")
    out, pos = [], _GLOBAL.size
    while pos + _RECORD.size <= len(data):
        _sec, _usec, incl, _orig = _RECORD.unpack_from(data, pos)
        pos += _RECORD.size
        body = data[pos:pos + incl]
        pos += incl
        sec, usec, event, _lines, _footer = _RTAC.unpack_from(body, 0)
        out.append((sec + usec / 1e6, "tx" if event == EVENT_TX else "rx", body[_RTAC.size:]))
    return out
