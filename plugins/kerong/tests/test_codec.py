"""KR-CU16 codec against recorded frames, and the parser's behaviour on garbage."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from edge_agent_kerong import codec
from hypothesis import assume, given, settings
from hypothesis import strategies as st

FRAMES = json.loads((Path(__file__).parent / "data" / "frames.json").read_text())


def test_requests_match_recorded_frames() -> None:
    for r in FRAMES["requests"]:
        cmd = codec.CMD_UNLOCK if r["cmd"] == "unlock" else codec.CMD_STATUS
        got = codec.encode_request(r["board"], r["lock_index"], cmd)
        assert got == bytes.fromhex(r["hex"]), r["what"]


def test_replies_decode_to_recorded_values() -> None:
    for r in FRAMES["replies"]:
        frames = codec.decode_all(bytes.fromhex(r["hex"]))
        assert frames == [codec.StatusReply(r["board"], r["hooks"], r["ir"])], r["what"]
        assert frames[0].raw == bytes.fromhex(r["hex"])


def test_bit_zero_is_lowest_lock() -> None:
    reply = codec.decode_all(bytes.fromhex("02 20 35 fe ff 01 80 03 d8"))[0]
    assert isinstance(reply, codec.StatusReply)
    assert reply.hook(0) == 0 and reply.hook(1) == 1
    assert reply.item(0) and reply.item(15) and not reply.item(1)


def test_bad_checksum_is_dropped_and_counted() -> None:
    d = codec.Decoder()
    bad = bytearray(bytes.fromhex("02 00 35 ff ff 00 00 03 38"))
    bad[-1] ^= 0x01
    good = bytes.fromhex("02 00 30 03 35")
    assert d.feed(bytes(bad) + good) == [codec.Request(0, 0, codec.CMD_STATUS)]
    assert d.checksum_errors == 1


def test_split_frames_across_feeds() -> None:
    d = codec.Decoder()
    raw = bytes.fromhex("02 00 35 ff ff 00 00 03 38")
    out = []
    for b in raw:
        out += d.feed(bytes([b]))
    assert out == [codec.StatusReply(0, 0xFFFF, 0)]


garbage = st.binary(max_size=200).map(
    # Sprinkle fake frame starts and plausible command bytes into the noise.
    lambda b: bytes(x if i % 5 else codec.STX for i, x in enumerate(b))
)


@settings(max_examples=300, deadline=None)
@given(g1=garbage, g2=garbage, board=st.integers(0, 15), hooks=st.integers(0, 0xFFFF),
       ir=st.integers(0, 0xFFFF))
def test_resync_garbage_frame_garbage_yields_exactly_the_frame(
    g1: bytes, g2: bytes, board: int, hooks: int, ir: int
) -> None:
    assume(not codec.decode_all(g1) and not codec.decode_all(g2))
    frame = codec.encode_status(board, hooks, ir)
    assert codec.Decoder().feed(g1 + frame + g2) == [codec.StatusReply(board, hooks, ir)]


frames_and_noise = st.lists(st.one_of(
    garbage,
    st.builds(codec.encode_status, st.integers(0, 15), st.integers(0, 0xFFFF),
              st.integers(0, 0xFFFF)),
    st.builds(codec.encode_request, st.integers(0, 15), st.integers(0, 15),
              st.sampled_from([codec.CMD_STATUS, codec.CMD_UNLOCK])),
    st.sampled_from([bytes([codec.STX]) * 3, bytes([codec.STX, codec.STX, 0x35]),
                     bytes([codec.STX, 0x00])]),
    st.builds(codec.encode_status, st.integers(0, 15), st.integers(0, 0xFFFF),
              st.integers(0, 0xFFFF)).map(lambda f: f[:-1] + bytes([f[-1] ^ 0x01])),
    st.builds(codec.encode_status, st.integers(0, 15), st.integers(0, 0xFFFF),
              st.integers(0, 0xFFFF)).map(lambda f: f[:-2] + b"\x00" + f[-1:]),
), max_size=12).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(data=frames_and_noise)
def test_a_byte_at_a_time_gives_what_one_read_gives(data: bytes) -> None:
    """The one-byte fast path (a pty read) decides each byte as the general path does:
    the same frames and the same garbage and checksum counts."""
    whole, single = codec.Decoder(), codec.Decoder()
    expect = whole.feed(data)
    got = [f for b in data for f in single.feed(bytes([b]))]
    assert got == expect
    assert (single.garbage_bytes + len(single._buf), single.checksum_errors) == (
        whole.garbage_bytes + len(whole._buf), whole.checksum_errors)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=4096), chunks=st.lists(st.integers(1, 64), max_size=50))
def test_never_raises_and_caps_buffer(data: bytes, chunks: list[int]) -> None:
    d = codec.Decoder(max_buffer=256)
    pos = 0
    for n in chunks or [len(data)]:
        d.feed(data[pos : pos + n])
        pos += n
        assert len(d._buf) <= 256
    d.feed(data[pos:])
    assert len(d._buf) <= 256


def test_resync_is_linear_on_64k_of_noise() -> None:
    noise = bytes([codec.STX, 0x00, codec.REPLY_STATUS]) * (64 * 1024 // 3)
    frame = codec.encode_status(3, 0x1234, 0x00FF)
    d = codec.Decoder()
    started = time.perf_counter()
    found = []
    for i in range(0, len(noise), 4096):
        found += d.feed(noise[i : i + 4096])
    found += d.feed(frame)
    elapsed = time.perf_counter() - started
    assert found == [codec.StatusReply(3, 0x1234, 0x00FF)]
    # Generous bound: the quadratic resync this guards against took tens of seconds.
    assert elapsed < 2.0


@pytest.mark.parametrize("noise_len", [2048, 4096, 65536])
def test_a_read_larger_than_the_buffer_cap_keeps_the_frame_at_its_start(noise_len: int) -> None:
    # One large read (a TCP bridge delivering a backlog): the frame at its start must not
    # be cut off by the buffer cap before it is parsed.
    frame = codec.encode_status(2, 0x0F0F, 0x00F0)
    noise = bytes(i % 256 for i in range(noise_len)).replace(bytes([codec.STX]), b"\x00")
    d = codec.Decoder()
    assert d.feed(frame + noise) == [codec.StatusReply(2, 0x0F0F, 0x00F0)]
    assert d.overflows == 0 and len(d._buf) <= codec.MAX_BUFFER


@pytest.mark.parametrize("fill", [codec.STX, 0x00, codec.ETX])
def test_byte_at_a_time_decodes_like_one_read(fill: int) -> None:
    frames = [codec.encode_status(b, b * 7, b * 11) for b in range(16)]
    stream = b"".join(bytes([fill]) * 5 + f for f in frames)
    bulk = codec.Decoder().feed(stream)
    d = codec.Decoder()
    single = [f for i in range(len(stream)) for f in d.feed(stream[i:i + 1])]
    assert single == bulk and len(bulk) == 16
