"""``edge-agent plugin new NAME``: write a complete, installable plugin package.

The generated package drives an example serial lock board protocol (8 locks per board,
addressed boards on one bus) end to end: codec, driver, bus probe, a simulator on a
pseudo-terminal, recorded frames and the conformance suite. Its tests pass as generated;
a vendor engineer then replaces the example protocol with their board's.
"""

from __future__ import annotations

import keyword
import re
from importlib import resources
from pathlib import Path
from string import Template

from edge_agent.contract import CONTRACT_VERSION
from edge_agent.errors import EdgeAgentError

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,30}$")
FILES = {
    "pyproject.toml": "pyproject.toml.tmpl",
    "README.md": "README.md.tmpl",
    "edge_agent_$name/__init__.py": "init.py.tmpl",
    "edge_agent_$name/py.typed": None,
    "edge_agent_$name/codec.py": "codec.py.tmpl",
    "edge_agent_$name/driver.py": "driver.py.tmpl",
    "edge_agent_$name/simulator.py": "simulator.py.tmpl",
    "edge_agent_$name/plugin.py": "plugin.py.tmpl",
    "tests/test_codec.py": "test_codec.py.tmpl",
    "tests/test_driver.py": "test_driver.py.tmpl",
    "tests/test_conformance.py": "test_conformance.py.tmpl",
}


class TemplateError(EdgeAgentError):
    """The plugin cannot be generated (bad name, target exists)."""


def new_plugin(name: str, dest: Path, *, vendor: str = "") -> Path:
    """Write package ``edge-agent-NAME`` under ``dest``; return its directory."""
    if not NAME_RE.match(name) or keyword.iskeyword(name):
        raise TemplateError(f"plugin name {name!r}: use 2-31 lower-case letters, digits or "
                            "underscores, starting with a letter (it becomes the entry point "
                            "and the module edge_agent_NAME)")
    if name in ("kerong", "gateway", "armoury"):
        raise TemplateError(f"{name!r} is a built-in plugin; choose your vendor's name")
    root = dest / f"edge-agent-{name.replace('_', '-')}"
    if root.exists():
        raise TemplateError(f"{root} already exists; remove it or choose another directory")
    values = {"name": name, "Name": "".join(p.capitalize() for p in name.split("_")),
              "vendor": vendor or name.capitalize(), "contract": CONTRACT_VERSION,
              "dist": f"edge-agent-{name.replace('_', '-')}"}
    src = resources.files("edge_agent.template")
    for out, tmpl in FILES.items():
        path = root / Template(out).substitute(values)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "" if tmpl is None else Template((src / tmpl).read_text()).substitute(values)
        path.write_text(text)
    return root
