"""mDNS discovery through real zeroconf sockets, in a private network namespace
(``unshare -rn``) so no packet reaches a real interface. Without unshare it falls back
to loopback only."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.testing import run_in_netns

SCENARIO = Path(__file__).parent / "mdns" / "scenario.py"


def test_mdns_discovery_in_private_namespace() -> None:
    out = run_in_netns(SCENARIO, timeout=90, loopback_fallback=True)
    devs = {d["id"]: d for d in out["devices"]}
    assert set(devs) == {"edgetest:SN-0042"}, "only the matching, confirmed device is adopted"
    dev = devs["edgetest:SN-0042"]
    assert dev["source"] == "mdns" and dev["link"] == "online"
    assert dev["properties"]["interface"] == "127.0.0.1"
    assert [c["door"] for c in dev["compartments"]] == ["closed"] * 3 + ["open"]
    inbox = {e["what"]: e["why"] for e in out["inbox"]}
    other = next(v for k, v in inbox.items() if "other-vendor" in k)
    assert "TXT vendor='acme', expected 'edgetest'" in other
    bad = next(v for k, v in inbox.items() if "bad-txt" in k)
    assert "not UTF-8" in bad or "serial" in bad
    assert out["status_mdns"]["interfaces"] == ["127.0.0.1"]


def test_a_site_tag_keeps_a_neighbouring_sites_lockers_out(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """[discovery.mdns] site_tag: on a network shared with another site (or another demo
    on the same host) only services whose TXT site matches are adopted; the neighbour's
    locker waits in the inbox, saying which site it belongs to."""
    monkeypatch.setenv("MDNS_SITE_TAG", "station-12")
    out = run_in_netns(SCENARIO, timeout=90, loopback_fallback=True)
    assert {d["id"] for d in out["devices"]} == {"edgetest:SN-0042"}
    inbox = {e["what"]: e["why"] for e in out["inbox"]}
    neighbour = next(v for k, v in inbox.items() if "neighbour" in k)
    assert "advertises site 'station-14', this site's tag is 'station-12'" in neighbour
    untagged = next(v for k, v in inbox.items() if "other-vendor" in k)
    assert "no TXT site tag" in untagged
