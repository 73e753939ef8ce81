"""Every route of the control socket under abusive input (hypothesis): whatever the body
or query, the answer is never a 5xx, and every error has the one shape. Plus the cases
found by hand: "out": "false" (a string) never takes a compartment out of service."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

from helpers import http, site_toml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.api.schema import ROUTES, path
from edge_agent.testing import running_agent, wait_device

DEV = "kerong:Bank-1:0"

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
                    st.just("\ud800"), st.just("false"), st.just("1e400"))
bodies = st.one_of(
    st.dictionaries(st.sampled_from(["compartment", "reason", "out", "minutes", "snapshot",
                                     "signature", "key_id", "x"]), scalars, max_size=5),
    st.lists(scalars, max_size=3), scalars)
queries = st.dictionaries(st.sampled_from(["limit", "after_seq", "since", "until",
                                           "compartment", "device", "format", "equipment"]),
                          st.one_of(st.text(max_size=12), st.just("9" * 3000),
                                    st.just("-1"), st.just("1e400")), max_size=2)


def raw(sock: Path, method: str, url: str, data: bytes) -> tuple[int, Any]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)  # a valid unlock may wait for its door to settle
        s.connect(str(sock))
        s.sendall(f"{method} {url} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                  .encode() + data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    head, _, payload = out.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    try:
        return status, json.loads(payload) if b"chunked" not in head.lower() else None
    except ValueError:
        return status, payload


def check(status: int, answer: Any) -> None:
    assert status < 500, (status, answer)
    if status >= 400:
        assert isinstance(answer, dict) and set(answer) == {"error", "message", "hint"}, answer


async def test_no_input_makes_a_5xx(kerong_bus: Any, tmp_path: Path) -> None:
    _sim, pty = kerong_bus({0: 0xFFFF}, pace=False)
    async with running_agent(site_toml({"Bank-1": pty.port}), tmp_path / "s") as (agent,
                                                                                  client):
        await wait_device(client, DEV)
        sock = Path(agent.socket_path)
        posts = [r for r in ROUTES.values() if r.method == "POST"]
        gets = [r for r in ROUTES.values() if r.method == "GET" and r.answer is not None]

        @settings(max_examples=150, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(st.sampled_from(posts), bodies)
        def post(route: Any, body: Any) -> None:
            data = json.dumps(body).encode("utf-8", "surrogatepass")
            check(*raw(sock, "POST", path(route.name, id=DEV), data))

        @settings(max_examples=100, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(st.sampled_from(gets), queries)
        def get(route: Any, query: dict[str, str]) -> None:
            from urllib.parse import urlencode

            url = path(route.name, id=DEV) + ("?" + urlencode(query) if query else "")
            check(*raw(sock, "GET", url, b""))

        # By hand: a 5,000-digit compartment, a lone surrogate, a string for a boolean.
        for body in (b'{"compartment": ' + b"9" * 5000 + b', "reason": "x"}',
                     b'{"compartment": 1e400, "reason": "x"}',
                     b'{"compartment": 3, "reason": "\\ud800"}'):
            status, answer = await asyncio.to_thread(raw, sock, "POST",
                                                     path("unlock", id=DEV), body)
            assert status == 400, (body[:40], answer)
        await asyncio.to_thread(post)
        await asyncio.to_thread(get)
        status, answer, _ = await asyncio.to_thread(
            http, sock, "POST", path("out_of_service", id=DEV),
            {"compartment": 6, "out": "false", "reason": "typed wrong"})
        assert status == 400 and "true or false" in answer["message"]
        device = await client.call("device", id=DEV)
        assert device["out_of_service"] == {}  # nothing was taken out of service
