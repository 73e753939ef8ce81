"""Plugins come in through the ``edge_agent.plugins`` entry-point group; bad ones are
refused with a reason a technician can read, and the rest load."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_agent.contract import PluginInfo
from edge_agent.hookspecs import hookimpl
from edge_agent.plugins import PluginHost, contract_compatible

PLUGINS = {
    "good_plugin": """
        from edge_agent.contract import PluginInfo
        from edge_agent.hookspecs import hookimpl
        @hookimpl
        def edge_agent_plugin_info():
            return PluginInfo(name="good", vendor="Good", version="2.0", contract="1.0")
    """,
    "misspelled_plugin": """
        from edge_agent.contract import PluginInfo
        from edge_agent.hookspecs import hookimpl
        @hookimpl
        def edge_agent_plugin_info():
            return PluginInfo(name="typo", vendor="T", version="1", contract="1.0")
        @hookimpl
        def edge_agent_bus_probe():
            return []
    """,
    "future_plugin": """
        from edge_agent.contract import PluginInfo
        from edge_agent.hookspecs import hookimpl
        @hookimpl
        def edge_agent_plugin_info():
            return PluginInfo(name="future", vendor="F", version="9", contract="2.0")
    """,
    "broken_plugin": """
        import edge_agent_does_not_exist
    """,
    "wrongargs_plugin": """
        from edge_agent.contract import PluginInfo
        from edge_agent.hookspecs import hookimpl
        @hookimpl
        def edge_agent_plugin_info():
            return PluginInfo(name="wrongargs", vendor="W", version="1", contract="1.0")
        @hookimpl
        def edge_agent_create_driver(candidate, context, colour):
            return None
    """,
}
ENTRY_POINTS = {
    "good": "good_plugin", "typo": "misspelled_plugin", "future": "future_plugin",
    "broken": "broken_plugin", "wrongargs": "wrongargs_plugin",
}


def _install_fake_dist(where: Path) -> None:
    for mod, src in PLUGINS.items():
        (where / f"{mod}.py").write_text(textwrap.dedent(src))
    dist = where / "edge_agent_testplugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: edge-agent-testplugins\n"
                                   "Version: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[edge_agent.plugins]\n" + "".join(f"{k} = {v}\n" for k, v in ENTRY_POINTS.items()))


def test_entry_point_plugins_loaded_or_refused_with_reasons(tmp_path: Path) -> None:
    _install_fake_dist(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "plugins", "--local", "--json"],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(tmp_path),
                                                         "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    got = {p["name"]: p for p in json.loads(proc.stdout)}
    assert got["kerong"]["status"] == "loaded"  # the built-in vendor, same entry-point group
    assert got["good"]["status"] == "loaded" and got["good"]["version"] == "2.0"
    assert got["typo"]["status"] == "refused"
    assert "edge_agent_bus_probe" in got["typo"]["reason"]
    assert "misspelled" in got["typo"]["reason"]
    # The hook's name comes first and the module is not repeated: a cut-off table cell
    # still shows what to fix.
    assert got["typo"]["reason"].startswith("unknown hook 'edge_agent_bus_probe'")
    assert "<module" not in got["typo"]["reason"]
    assert got["future"]["status"] == "refused"
    assert "written for contract 2.0" in got["future"]["reason"]
    assert "major versions differ" in got["future"]["reason"]
    assert got["broken"]["status"] == "refused"
    assert "failed to import broken_plugin" in got["broken"]["reason"]
    assert "ModuleNotFoundError" in got["broken"]["reason"]
    assert got["wrongargs"]["status"] == "refused"
    assert "colour" in got["wrongargs"]["reason"]
    table = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "plugins", "--local"],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(tmp_path),
                                                         "PATH": "/usr/bin:/bin"},
    )
    assert "refused" in table.stdout and "kerong" in table.stdout


def test_disabled_and_env_selected_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    host = PluginHost(disabled=["kerong"])
    host.load_entry_points()
    assert host.records["kerong"].status == "disabled"
    monkeypatch.setenv("EDGE_AGENT_PLUGINS", "nothing-else")
    host = PluginHost()
    host.load_entry_points()
    assert host.records["kerong"].status == "disabled"
    assert "EDGE_AGENT_PLUGINS" in host.records["kerong"].reason


@pytest.mark.parametrize(
    ("declared", "ok"),
    [("1.0", True), ("1.1", False), ("0.9", False), ("2.0", False), ("one", False)],
)
def test_contract_compatibility(declared: str, ok: bool) -> None:
    assert (contract_compatible(declared, "1.0") is None) is ok


def test_plugin_whose_info_hook_raises_is_refused() -> None:
    class Bad:
        @hookimpl
        def edge_agent_plugin_info(self) -> PluginInfo:
            raise RuntimeError("boom")

    host = PluginHost()
    rec = host.register(Bad(), "bad")
    assert rec.status == "refused" and "RuntimeError: boom" in rec.reason
    assert host.pm.get_plugin("bad") is None


def test_every_hook_is_documented_with_example_and_version() -> None:
    from edge_agent import hookspecs

    hooks = [n for n in dir(hookspecs) if n.startswith("edge_agent_")]
    assert len(hooks) >= 8
    for name in hooks:
        doc = getattr(hookspecs, name).__doc__ or ""
        assert "Since contract" in doc, f"{name}: say which contract version added it"
        assert "Example::" in doc, f"{name}: give an example"
        assert ":returns:" in doc, f"{name}: document the return value"


def test_plugin_guide_documents_every_hook_as_the_specs_say() -> None:
    from pathlib import Path

    from edge_agent import hookdoc

    guide = (Path(__file__).resolve().parent.parent / "docs" / "plugin-guide.md").read_text()
    for name in hookdoc.hook_names():
        assert f"### {name}" in guide, (f"{name} is not in docs/plugin-guide.md: run "
                                        "python -m edge_agent.hookdoc --write "
                                        "docs/plugin-guide.md")
    assert hookdoc.embedded(guide) == hookdoc.render(), (
        "docs/plugin-guide.md is out of date with edge_agent/hookspecs.py: run "
        "python -m edge_agent.hookdoc --write docs/plugin-guide.md")
