"""The audit trail's vocabulary is one documented enumeration, and the README's table of
actions is that enumeration."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from edge_agent.actions import DESCRIPTIONS, Action

ROOT = Path(__file__).resolve().parent.parent


def test_every_action_is_described_and_in_the_readme_table() -> None:
    assert set(DESCRIPTIONS) == set(Action)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = re.findall(r"^\| `([a-z_]+)` \| (.+) \|$", readme, flags=re.M)
    assert [(a, d) for a, d in table if a in {x.value for x in Action}] == [
        (a.value, DESCRIPTIONS[a]) for a in Action]


def test_the_core_writes_no_action_outside_the_enumeration() -> None:
    literal_actions = []
    for path in (ROOT / "edge_agent").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            # record("x") / record_soon("x") and {"action": "x"} with a string literal
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in (
                    "record", "record_soon") and node.args \
                    and isinstance(node.args[0], ast.Constant):
                literal_actions.append((path.name, node.args[0].value))
            if isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values, strict=True):
                    if isinstance(k, ast.Constant) and k.value == "action" \
                            and isinstance(v, ast.Constant):
                        literal_actions.append((path.name, v.value))
    assert literal_actions == []
