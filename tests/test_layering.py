"""The layers stay apart: the core knows no vendor and no dashboard; the dashboard is a
client of the API and knows nothing else of the core."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_PACKAGES = {p.name for p in (ROOT / "plugins").glob("*/edge_agent_*")}
TUI_MAY_IMPORT = {"edge_agent.client", "edge_agent.errors", "edge_agent.api.schema",
                  "edge_agent.api.routes", "edge_agent.api.usage",
                  "edge_agent.api.fleetview", "edge_agent.api.times"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_core_imports_no_dashboard_and_no_plugin() -> None:
    assert PLUGIN_PACKAGES >= {"edge_agent_kerong", "edge_agent_gateway", "edge_agent_armoury"}
    bad = {}
    for path in sorted((ROOT / "edge_agent").rglob("*.py")):
        wrong = {m for m in imports(path)
                 if m.split(".")[0] == "tui" or m.split(".")[0] in PLUGIN_PACKAGES}
        if wrong:
            bad[str(path.relative_to(ROOT))] = sorted(wrong)
    assert bad == {}


def test_the_dashboard_uses_only_the_client_and_the_api_schema() -> None:
    bad = {}
    for path in sorted((ROOT / "tui").rglob("*.py")):
        wrong = {m for m in imports(path)
                 if m.split(".")[0] == "edge_agent" and m not in TUI_MAY_IMPORT}
        if wrong:
            bad[str(path.relative_to(ROOT))] = sorted(wrong)
    assert bad == {}


def vendor_fields() -> set[str]:
    """The keys every shipped plugin puts in DeviceInfo.details / DeviceState.details."""
    keys: set[str] = set()
    for path in (ROOT / "plugins").glob("*/edge_agent_*/*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "details" \
                    and isinstance(node.value, ast.Dict):
                keys.update(k.value for k in node.value.keys
                            if isinstance(k, ast.Constant) and isinstance(k.value, str))
    return keys


def test_the_dashboard_names_no_vendor_field() -> None:
    """Vendor diagnostics reach the dashboard as labelled rows (contract 1.2), so no
    vendor's detail key appears in tui/ (it used to read hook_meaning, checksum_errors)."""
    from edge_agent.api import schema

    fields = vendor_fields()
    assert {"hook_meaning", "unlock_reply"} <= fields, fields
    fields |= {"checksum_errors", "garbage_bytes"}  # Kerong's reading figures
    # Words that are the API's own (a Wire has a "bus") or a column title are not vendor's.
    api_keys = {k for v in vars(schema).values() if isinstance(v, type)
                and issubclass(v, dict) for k in getattr(v, "__annotations__", {})}
    fields -= api_keys | {"transport", "kind"}
    bad = {}
    for path in sorted((ROOT / "tui").rglob("*.py")):
        strings = {n.value for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                   if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        if found := {f for f in fields if any(f in s for s in strings)}:
            bad[str(path.relative_to(ROOT))] = sorted(found)
    assert bad == {}
