"""Helpers shared by the tests (importable: tests/ is on pythonpath)."""

from __future__ import annotations


def site_toml(buses: dict[str, str], *, poll: float = 0.1, extra: str = "") -> str:
    """A minimal site config with the given buses (id -> port or URL)."""
    parts = [
        '[site]\nid = "test-site"\n',
        f"[agent]\npoll_interval = {poll}\ncommand_timeout = 1.0\noffline_after = 3\n"
        "backoff_initial = 0.1\nbackoff_max = 0.5\nprobe_interval = 2.0\n",
    ]
    for bus_id, port in buses.items():
        parts.append(f'[[buses]]\nid = "{bus_id}"\nport = "{port}"\nprotocol = "kerong-cu16"\n')
    parts.append(extra)
    return "\n".join(parts)
