"""Recorded HTTP exchanges (data/http.json, captured from the driver and the simulator):
a real HTTP server that only replays the recording answers today's driver, which must
send the same requests in the same order and read the same states. No simulator runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from edge_agent_gateway.driver import GatewayDriver, parse_lockers

from edge_agent.errors import ProtocolError

RECORDED: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "data" / "http.json").read_text())


async def test_driver_replays_the_recorded_conversation() -> None:
    seen: list[dict[str, Any]] = []
    queue = list(RECORDED)

    async def replay(request: web.Request) -> web.Response:
        body = await request.text()
        seen.append({"method": request.method, "path": request.path,
                     "body": json.loads(body) if body else None})
        ex = queue.pop(0)
        return web.json_response(ex["answer"], status=ex["status"])

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", replay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    drv = GatewayDriver("127.0.0.1", port, "GW-0042", {})
    try:
        info = await drv.connect()
        first = await drv.read_state()
        opened = await drv.unlock(3)
        await drv.set_out_of_service(5, True, "DAMAGED-HINGE")
        last = await drv.read_state()
    finally:
        await drv.close()
        await runner.cleanup()
    assert seen == [{k: ex[k] for k in ("method", "path", "body")} for ex in RECORDED]
    assert (info.serial, info.model, info.compartments) == ("GW-0042", "LG-12", 6)
    assert first.compartments[1].door == "open"
    assert [c.item.value for c in first.compartments] == [
        "present" if lk["occupied"] else "absent" for lk in RECORDED[1]["answer"]]
    assert opened.compartments[2].door == "open"
    assert last.compartments[4].fault == "out of service (DAMAGED-HINGE)"


@pytest.mark.parametrize("body", [{"lockers": []}, [{"doorOpen": True}], [None], "x"])
def test_malformed_locker_lists_are_protocol_errors(body: Any) -> None:
    with pytest.raises(ProtocolError, match="GET /lockers"):
        parse_lockers(body)
