"""Kerong KR-CU16 frame codec (protocols.md section 1).

Request, 5 bytes: ``STX ADDR CMD ETX SUM`` with ``ADDR = board << 4 | lock`` and
``SUM = sum(bytes 0..3) & 0xFF``. Status reply, 9 bytes:
``STX ADDR 0x35 HOOK1-8 HOOK9-16 IR1-8 IR9-16 ETX SUM``.

The decoder resynchronises after garbage in linear time, caps its buffer and never
raises on bad bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

STX = 0x02
ETX = 0x03
CMD_STATUS = 0x30
CMD_UNLOCK = 0x31
CMD_STATUS_ALL = 0x32
CMD_UNLOCK_ALL = 0x33
CMD_UNLOCK_TIME = 0x37
CMD_CLEAR_BUSY = 0x38
REPLY_STATUS = 0x35
REPLY_STATUS_ALL = 0x36

REQUEST_LEN = 5
STATUS_LEN = 9
MAX_BUFFER = 2048
LOCKS = 16
BOARDS = 16

# Length of a frame by its command byte. Requests appear on the wire too when a bus
# adapter echoes what it sends, so the decoder understands both directions.
_FRAME_LEN = {
    CMD_STATUS: REQUEST_LEN,
    CMD_UNLOCK: REQUEST_LEN,
    CMD_STATUS_ALL: REQUEST_LEN,
    CMD_UNLOCK_ALL: REQUEST_LEN,
    CMD_CLEAR_BUSY: REQUEST_LEN,
    REPLY_STATUS: STATUS_LEN,
}


def checksum(data: bytes | bytearray) -> int:
    return sum(data) & 0xFF


def encode_request(board: int, lock: int, cmd: int) -> bytes:
    """Encode a 5-byte request. ``lock`` is 0-based; board-level commands pass 0."""
    if not 0 <= board < BOARDS or not 0 <= lock < LOCKS:
        raise ValueError(f"board {board} lock {lock} out of range (0-15)")
    head = bytes((STX, (board << 4) | lock, cmd, ETX))
    return head + bytes((checksum(head),))


def status_request(board: int) -> bytes:
    return encode_request(board, 0, CMD_STATUS)


def unlock_request(board: int, lock_index: int) -> bytes:
    """``lock_index`` is 0-based (lock 1 on the door is index 0)."""
    return encode_request(board, lock_index, CMD_UNLOCK)


@dataclass(frozen=True)
class Request:
    board: int
    lock: int
    cmd: int

    @property
    def raw(self) -> bytes:
        return encode_request(self.board, self.lock, self.cmd)


@dataclass(frozen=True)
class StatusReply:
    board: int
    hooks: int  # 16 bits, bit 0 = lock 1
    ir: int  # 16 bits, bit 0 = lock 1; 1 = item present

    def hook(self, lock_index: int) -> int:
        return (self.hooks >> lock_index) & 1

    def item(self, lock_index: int) -> bool:
        return bool((self.ir >> lock_index) & 1)

    @property
    def raw(self) -> bytes:
        return encode_status(self.board, self.hooks, self.ir)


def encode_status(board: int, hooks: int, ir: int) -> bytes:
    head = bytes(
        (
            STX,
            board << 4,
            REPLY_STATUS,
            hooks & 0xFF,
            (hooks >> 8) & 0xFF,
            ir & 0xFF,
            (ir >> 8) & 0xFF,
            ETX,
        )
    )
    return head + bytes((checksum(head),))


Frame = Request | StatusReply


class Decoder:
    """Incremental decoder. ``feed`` returns every valid frame; counters say what was dropped."""

    def __init__(self, max_buffer: int = MAX_BUFFER) -> None:
        self._buf = bytearray()
        self._max = max_buffer
        self.garbage_bytes = 0
        self.checksum_errors = 0
        self.overflows = 0
        self._need = 0  # bytes the buffer must hold before a frame can complete

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        if len(data) == 1:
            # A read that returns one byte at a time (a pty, a TCP bridge): decide what
            # that byte does without rescanning the buffer. Counters and frames are the
            # same as the general path's (tests feed both ways).
            n = len(buf)
            if n == 0:
                if data[0] != STX:
                    self.garbage_bytes += 1  # noise between frames
                    return []
                buf += data
                self._need = 3  # the command byte tells the length
                return []
            if n + 1 < self._need:
                buf += data  # inside a frame whose length is known
                return []
            if n == 2 and buf[0] == STX:
                length = _FRAME_LEN.get(data[0])
                if length is not None:
                    buf += data  # the command byte: the frame's length is known
                    self._need = length
                    return []
                # That STX began no frame: resync on the next STX after it.
                self.garbage_bytes += 1
                if buf[1] == STX:
                    buf[1] = data[0]  # [STX, byte]: a frame start with its address
                    self._need = 3
                    return []
                self.garbage_bytes += 1
                buf.clear()
                if data[0] == STX:
                    buf += data
                    self._need = 3
                else:
                    self.garbage_bytes += 1
                    self._need = 0
                return []
            if n > 2 and n + 1 == self._need and buf[0] == STX:
                # The last byte of a frame: whole and valid is the usual case.
                buf += data
                if buf[-2] == ETX and (sum(buf[:-1]) & 0xFF) == buf[-1]:
                    frame = _parse(bytes(buf))
                    buf.clear()
                    self._need = 0
                    return [frame]
                del buf[-1]  # not valid: the general path resyncs (and counts)
        buf += data
        n = len(buf)
        if n < self._need:
            # The per-byte path inside a frame whose length is known: nothing to decide
            # until its last byte is in (a read that returns one byte at a time).
            return []
        self._need = 0
        if n < 3:
            # The per-byte path (a bus read that returns one byte): nothing can be decided
            # until the command byte is in, except garbage in front of the first STX.
            if n and buf[0] != STX:
                start = buf.find(STX)
                drop = n if start < 0 else start
                self.garbage_bytes += drop
                del buf[:drop]
            if buf:
                self._need = 3  # a frame start: the command byte tells the length
            return []
        # Parse everything first, then cap what is left over: capping first would throw
        # away whole frames at the start of a large read.
        frames: list[Frame] = []
        pos = 0
        while True:
            start = buf.find(STX, pos)
            if start < 0:
                self.garbage_bytes += n - pos
                pos = n
                break
            self.garbage_bytes += start - pos
            pos = start
            if n - start < 3:
                self._need = 3  # the frame start is at 0 once pos is dropped below
                break  # need the command byte to know the length
            length = _FRAME_LEN.get(buf[start + 2])
            if length is None:
                pos = start + 1  # not a frame start: resync on the next STX
                self.garbage_bytes += 1
                continue
            if n - start < length:
                self._need = length  # counted from the frame start, at 0 below
                break  # wait for the rest
            if buf[start + length - 2] != ETX or (
                    sum(buf[start:start + length - 1]) & 0xFF) != buf[start + length - 1]:
                self.checksum_errors += 1
                self.garbage_bytes += 1
                pos = start + 1
                continue
            frames.append(_parse(bytes(buf[start:start + length])))
            pos = start + length
        del buf[:pos]
        if len(buf) > self._max:  # only a frame's worth can be left: defensive
            drop = len(buf) - self._max
            del buf[:drop]
            self.garbage_bytes += drop
            self.overflows += 1
            self._need = 0
        return frames

    def reset(self) -> None:
        """Drop a partial frame (contract 1.2: the bus calls this before each request, so
        a reply cut short is never glued to the next one)."""
        self.garbage_bytes += len(self._buf)
        self._buf.clear()
        self._need = 0


def _parse(frame: bytes) -> Frame:
    addr, cmd = frame[1], frame[2]
    if cmd == REPLY_STATUS:
        return StatusReply(
            board=addr >> 4,
            hooks=frame[3] | (frame[4] << 8),
            ir=frame[5] | (frame[6] << 8),
        )
    return Request(board=addr >> 4, lock=addr & 0x0F, cmd=cmd)


def decode_all(data: bytes) -> list[Frame]:
    """Decode a complete capture (for tests and recorded frames)."""
    return Decoder().feed(data)
