"""The API schema is the API: the server serves exactly the named routes, every JSON
answer of a running agent validates against its model, errors have the one shape, and
docs/openapi.json is what the schema generates."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from helpers import http, site_toml

from edge_agent.api.schema import ROUTES, Error, adapter, openapi, path
from edge_agent.testing import running_agent, wait_device

ROOT = Path(__file__).resolve().parent.parent
DEV = "kerong:Bank-1:0"


def test_the_openapi_document_is_generated_from_the_schema() -> None:
    on_disk = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert on_disk == openapi(), ("docs/openapi.json is stale: python -m "
                                  "edge_agent.api.schema > docs/openapi.json")
    assert {op["operationId"] for ops in on_disk["paths"].values() for op in ops.values()} \
        == set(ROUTES)


async def test_every_answer_matches_its_model(kerong_bus, tmp_path: Path) -> None:
    _sim, pty = kerong_bus({0: 0xFFFF})
    async with running_agent(site_toml({"Bank-1": pty.port}), tmp_path / "s") as (agent, client):
        await wait_device(client, DEV)
        sock = agent.socket_path

        def check(name: str, answer: object) -> None:
            route = ROUTES[name]
            assert route.answer is not None
            from edge_agent.api import schema

            record = getattr(schema, route.answer)
            adapter(list[record] if route.many else record).validate_python(  # type: ignore[valid-type]
                answer, strict=True)

        posts = {"unlock": {"compartment": 3, "reason": "schema"},
                 "out_of_service": {"compartment": 4, "reason": "schema", "out": True},
                 "adopt": {"reason": "schema"}}
        for name, body in posts.items():
            status, answer, _ = await asyncio.to_thread(http, sock, "POST",
                                                        path(name, id=DEV), body)
            assert status == 200, answer
            check(name, answer)
        for name, route in ROUTES.items():
            if route.method == "GET" and route.answer is not None:
                query = "?equipment=radio" if "equipment" in route.query else ""
                status, answer, _ = await asyncio.to_thread(http, sock, "GET",
                                                            path(name, id=DEV) + query)
                if name == "person":  # no officers here: checked in test_custody
                    assert status == 404 and answer["error"] == "not_found", answer
                    continue
                assert status == 200, (name, answer)
                check(name, answer)
        # One error shape, whatever went wrong.
        for method, url, body in (
                ("GET", path("device", id="nope"), None),
                ("POST", path("unlock", id=DEV), {"compartment": 0, "reason": "x"}),
                ("POST", path("unlock", id=DEV), {"compartment": 99, "reason": "x"}),
                ("POST", path("out_of_service", id=DEV), {"compartment": 4}),
                ("GET", path("events") + "?limit=abc", None)):
            status, answer, _ = await asyncio.to_thread(http, sock, method, url, body)
            assert status >= 400
            adapter(Error).validate_python(answer, strict=True)
            assert set(answer) == {"error", "message", "hint"}, answer
