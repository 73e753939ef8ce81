"""The REST locker gateway plugin against its simulator (a real HTTP server advertised
through real zeroconf), inside a private network namespace."""

from __future__ import annotations

from pathlib import Path

from edge_agent.testing import run_in_netns

SCENARIO = Path(__file__).parent / "netns" / "scenario.py"


def test_gateway_discovery_state_unlock_faults_spoof_and_ip_change() -> None:
    out = run_in_netns(SCENARIO)
    assert out["first"]["source"] == "mdns" and out["first"]["link"] == "online"
    assert out["first"]["address"].startswith("https://127.0.0.1:")
    assert out["interface"] == "127.0.0.1"
    assert out["serial_confirmed"] == "GW-0042"
    assert out["items"] == ["absent" if i % 3 == 0 else "present" for i in range(12)]
    assert out["unlock"]["opens"] == [4] and out["unlock"]["state"]["door"] == "open"
    assert out["jammed"] == {"status": 409, "code": "lock_jammed"}
    assert out["jammed_outcome"] == "lock_jammed"
    assert "500" in out["reason_500"]
    assert "no answer" in out["reason_slow_s"] or "longer than" in out["reason_slow_s"]
    assert out["reason_drop"], "a dropped connection gives a reason"
    assert out["oos"]["told"] is True and out["oos"]["on_gateway"] == [True, "DAMAGED-HINGE"]
    assert out["oos"]["fault"] == "out of service (DAMAGED-HINGE)"
    assert any("identity conflict" in why and "gateway:EVIL-9" in why
               for why in out["spoof_inbox"])
    assert out["spoof_device_created"] is False
    assert out["devices_after_move"] == ["gateway:GW-0042"]
    assert out["address_after_move"].startswith("https://127.0.0.2:")
    assert out["move_audited"] is True


SPOOF = Path(__file__).parent / "netns" / "spoof_scenario.py"


def test_a_spoofed_gateway_never_takes_the_device_over() -> None:
    out = run_in_netns(SPOOF)
    assert out["address_after_spoof"] == out["genuine"]
    assert out["unlock_after_spoof"]["genuine_opens"] == [2]
    assert out["unlock_after_spoof"]["spoof_opens"] == []
    assert out["health"] == "degraded"
    assert any("identity claimed by https://127.0.0.3" in m for m in out["alarms"])
    assert out["link_during_spoof2"] == "online"
    assert out["address_during_spoof2"] == out["genuine"]
    assert out["genuine_opens"] == [2, 3]
    assert len(out["conflicts"]) == 2
    claimed = out["audited"]["conflicts"]
    assert any("127.0.0.3" in c for c in claimed) and any("127.0.0.4" in c for c in claimed)
    assert out["audited"]["moves"] == []
    assert out["audited"]["unlocks"] == [[3, "ok"], [4, "ok"]]
    assert out["real_move"]["verified"] is True
    assert out["real_move"]["new"].startswith("https://127.0.0.2:")
