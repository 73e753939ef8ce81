"""Cabinets discovered through real zeroconf (``_modbus._tcp`` with a profile in TXT) in a
private network namespace: both shipped models and one from the site's profile directory,
state, a change followed, a spoofed serial refused, an unknown profile in the inbox."""

from __future__ import annotations

from pathlib import Path

from edge_agent.testing import run_in_netns

SCENARIO = Path(__file__).parent / "netns" / "scenario.py"


def test_cabinets_found_by_mdns() -> None:
    out = run_in_netns(SCENARIO)
    cabs = out["cabinets"]
    assert set(cabs) == {"armoury:WC12-0100", "armoury:TD8-0200", "armoury:WC6-0300"}
    for cab, slots, model in (("armoury:WC12-0100", 12, "WC-12 weapon cabinet"),
                              ("armoury:TD8-0200", 8, "TD-8 Taser dock"),
                              ("armoury:WC6-0300", 6, "WC-12 weapon cabinet")):
        c = cabs[cab]
        assert (c["source"], c["link"], c["slots"], c["model"]) == ("mdns", "online", slots,
                                                                    model)
        assert c["address"].startswith("modbus-tcp://127.0.0.1:") and c["tags_ok"]
        assert c["interface"] == "127.0.0.1"
    assert out["spoof"]["link"] == "discovered" and "FAKE-1" in out["spoof"]["refused"]
    assert "expected cabinet FAKE-1" in out["spoof"]["reason"]
    assert "WC12-0100" in out["spoof"]["reason"]
    assert any("ODD-7" in e and "declined" in e for e in out["inbox"]), out["inbox"]
