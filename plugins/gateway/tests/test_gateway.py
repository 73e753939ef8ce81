"""The REST locker gateway plugin against its simulator (a real HTTP server advertised
through real zeroconf), inside a private network namespace."""

from __future__ import annotations

from pathlib import Path

from edge_agent.testing import run_in_netns

SCENARIO = Path(__file__).parent / "netns" / "scenario.py"


def test_gateway_discovery_state_unlock_faults_spoof_and_ip_change() -> None:
    out = run_in_netns(SCENARIO)
    assert out["first"]["source"] == "mdns" and out["first"]["link"] == "online"
    assert out["first"]["address"].startswith("http://127.0.0.1:")
    assert out["interface"] == "127.0.0.1"
    assert out["serial_confirmed"] == "GW-0042"
    assert out["items"] == ["absent" if i % 3 == 0 else "present" for i in range(12)]
    assert out["unlock"]["opens"] == [4] and out["unlock"]["state"]["door"] == "open"
    assert "500" in out["reason_500"]
    assert "no answer" in out["reason_slow_s"] or "longer than" in out["reason_slow_s"]
    assert out["reason_drop"], "a dropped connection gives a reason"
    assert out["oos"]["told"] is True and out["oos"]["on_gateway"] == [True, "DAMAGED-HINGE"]
    assert out["oos"]["fault"] == "out of service (DAMAGED-HINGE)"
    assert any("identity conflict" in why and "gateway:EVIL-9" in why
               for why in out["spoof_inbox"])
    assert out["spoof_device_created"] is False
    assert out["devices_after_move"] == ["gateway:GW-0042"]
    assert out["address_after_move"].startswith("http://127.0.0.2:")
    assert out["move_audited"] is True
