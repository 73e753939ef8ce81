"""The one-shot client's own HTTP/1.1 (edge_agent.oneshot): the answers the agent's aiohttp
listener gives (a Content-Length body, a chunked body, a body ended by close), a kept-alive
connection the agent closed, and answers that are not HTTP. A scripted server on a real Unix
socket gives each answer byte for byte; the agent-backed paths are in test_cli.py."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from edge_agent.errors import ClientError
from edge_agent.oneshot import SocketClient


@contextmanager
def scripted(path: Path, answers: list[bytes | None]) -> Iterator[list[bytes]]:
    """Serve one answer per request, in order; None closes the connection without an
    answer, and every answer after a None comes on the next connection. Yields the
    requests received."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(4)
    srv.settimeout(5)
    seen: list[bytes] = []

    def serve() -> None:
        todo = list(answers)
        while todo:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as rfile:
                conn.settimeout(5)
                while todo:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        line = rfile.readline()
                        if not line:
                            break
                        head += line
                    if not head:
                        break
                    length = [int(h.split(b":")[1]) for h in head.split(b"\r\n")
                              if h.lower().startswith(b"content-length:")]
                    seen.append(head + (rfile.read(length[0]) if length else b""))
                    answer = todo.pop(0)
                    if answer is None:
                        break
                    conn.sendall(answer)
                    delimited = b"Content-Length" in answer or b"chunked" in answer
                    if b"Connection: close" in answer or not delimited:
                        break

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield seen
    finally:
        srv.close()
        t.join(5)


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def test_content_length_chunked_and_close_delimited_bodies(tmp_path: Path) -> None:
    sock = tmp_path / "a.sock"
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;ext=1\r\n[1, 2\r\n4\r\n, 3]\r\n0\r\nX-Trailer: t\r\n\r\n")
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"Mixed\": \"Case\"}"
    with scripted(sock, [ok(b'{"a": 1}'), chunked, ok(b"[]"), closing]) as seen:
        with SocketClient(sock) as c:
            assert c.get("/v1/status") == {"a": 1}
            assert c.get("/v1/devices", zone="Bank A") == [1, 2, 3]
            assert c.post("/v1/devices/kerong%3ABank-1%3A0/unlock",
                          {"compartment": 3}) == []
            assert c.get("/v1/plugins") == {"Mixed": "Case"}
    # One connection for the three kept-alive answers, the query string encoded, the body
    # sent with its length.
    assert seen[1].startswith(b"GET /v1/devices?zone=Bank+A HTTP/1.1\r\n")
    assert b"Content-Length: 18\r\n" in seen[2] and seen[2].endswith(b'{"compartment": 3}')


def test_a_kept_alive_connection_the_agent_closed_is_tried_once_more(tmp_path: Path) -> None:
    sock = tmp_path / "a.sock"
    with scripted(sock, [ok(b"1"), None, ok(b"2")]) as seen:
        with SocketClient(sock) as c:
            assert c.get("/v1/status") == 1
            assert c.get("/v1/status") == 2
    assert len(seen) == 3


def test_a_fresh_connection_closed_unanswered_is_not_retried(tmp_path: Path) -> None:
    """A POST on a new connection that got no answer may have been carried out: it is
    reported, never sent twice."""
    sock = tmp_path / "a.sock"
    with scripted(sock, [None, ok(b"1")]) as seen:
        with SocketClient(sock) as c, pytest.raises(ClientError, match="cannot reach"):
            c.post("/v1/devices/x/unlock", {"compartment": 1})
    assert len(seen) == 1


def test_errors_carry_the_api_message_and_bad_answers_are_named(tmp_path: Path) -> None:
    sock = tmp_path / "a.sock"
    err = (b'{"error": "no_such_device", "message": "no device \'kerong:X:0\'", '
           b'"hint": "edge-agent devices"}')
    answers = [ok(err).replace(b"200 OK", b"404 Not Found"), b"SSH-2.0-OpenSSH\r\n\r\n",
               b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n[1"]
    with scripted(sock, answers):
        with SocketClient(sock) as c:
            with pytest.raises(ClientError) as e:
                c.get("/v1/devices/kerong%3AX%3A0")
            assert e.value.status == 404 and e.value.code == "no_such_device"
            assert "edge-agent devices" in str(e.value)
            with pytest.raises(ClientError, match="not an HTTP answer"):
                c.get("/v1/status")
            with pytest.raises(ClientError, match="8 bytes of the body still to come"):
                c.get("/v1/status")


def test_download_and_stream_read_chunked_bodies(tmp_path: Path) -> None:
    sock = tmp_path / "a.sock"
    body = b"x" * 70000
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in (body[:100], body[100:]))
               + b"0\r\n\r\n")
    sse = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n"
           + b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in (
               b": subscribed\n\n", b"event: device\ndata: {\"id\": ", b"\"kerong:Bank-1:0\"}\n\n"))
           + b"0\r\n\r\n")
    with scripted(sock, [chunked, sse]):
        with SocketClient(sock) as c:
            out, sizes = io.BytesIO(), []
            assert c.download("/v1/export", out, lambda n, _t: sizes.append(n)) == 70000
            assert out.getvalue() == body and sizes[-1] == 70000
            assert list(c.stream()) == [("open", {}), ("device", {"id": "kerong:Bank-1:0"})]
