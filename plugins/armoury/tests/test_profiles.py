"""Device profiles: the shipped ones load, bad ones say file, line and key, and the
read plan and point codec are right."""

from __future__ import annotations

from pathlib import Path

import pytest
from edge_agent_armoury.profile import Point, ProfileLibrary, Read, plan_reads, state_reads
from edge_agent_armoury.reading import AlarmWatch, CabinetReading, SlotReading
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.errors import ConfigError

GOOD = (Path(__file__).parents[1] / "edge_agent_armoury" / "profiles"
        / "sentinel-wc12.toml").read_text()


def test_shipped_profiles_load() -> None:
    lib = ProfileLibrary()
    assert lib.check_all() == []
    assert {"sentinel-wc12", "boltline-td8"} <= set(lib.names())


def test_read_plan_merges_into_few_requests() -> None:
    lib = ProfileLibrary()
    assert state_reads(lib.get("sentinel-wc12")) == [
        Read("discrete", 0, 44), Read("input", 20, 2), Read("input", 100, 72)]
    # Registers far apart are separate reads; a read never exceeds 125 registers.
    assert plan_reads([("input", 0, 1), ("input", 500, 1)]) == [Read("input", 0, 1),
                                                                Read("input", 500, 1)]
    assert all(r.count <= 125 for r in plan_reads([("holding", a, 4) for a in range(0, 400, 4)]))


@pytest.mark.parametrize("change, where, says", [
    ('tamper = { table = "discrete", address = 1 }',
     'tamper = { table = "input", address = 1 }', "needs 'bit'"),
    ('slots = 12', 'slots = 0', "greater than or equal to 1"),
    ('pulse_ms = 700', 'pulse_msec = 700', "unknown key"),
    ('lock = { table = "coil", address = 0, stride = 1 }',
     'lock = { table = "holding", address = 0, stride = 1, bit = 0 }', "must be a coil"),
])
def test_bad_profile_names_file_line_and_key(tmp_path: Path, change: str, where: str,
                                             says: str) -> None:
    assert change in GOOD
    bad = GOOD.replace(change, where)
    (tmp_path / "sentinel-wc12.toml").write_text(bad)
    lib = ProfileLibrary([tmp_path])
    with pytest.raises(ConfigError) as exc:
        lib.get("sentinel-wc12")
    line = next(i for i, text in enumerate(bad.splitlines(), 1) if where in text)
    problem = exc.value.problems[0]
    assert problem.startswith(f"{tmp_path / 'sentinel-wc12.toml'}:{line}: "), problem
    assert says in problem


def test_unknown_profile_and_missing_dir_are_reported(tmp_path: Path) -> None:
    lib = ProfileLibrary([tmp_path / "nope"])
    assert "does not exist" in lib.problems[0]
    with pytest.raises(ConfigError, match=r"no device profile 'acme-x1' \(known: boltline-td8"):
        lib.get("acme-x1")


@given(st.sampled_from(["uint16", "int16", "uint32", "hex", "string", "bool"]),
       st.integers(0, 2**32 - 1), st.integers(0, 15), st.booleans())
def test_point_encode_decode_round_trip(kind: str, n: int, bit: int, invert: bool) -> None:
    if kind == "bool":
        p = Point(table="input", address=0, type="bool", bit=bit, invert=invert)
        value: object = bool(n & 1)
        raw = p.encode(value, current=n & 0xFFFF)
        assert raw[0] & ~(1 << bit) == (n & 0xFFFF) & ~(1 << bit)  # other bits untouched
    elif kind == "hex":
        p = Point(table="holding", address=0, type="hex", count=4)
        value = f"{n:016X}"
        raw = p.encode(value)
    elif kind == "string":
        p = Point(table="holding", address=0, type="string", count=6)
        value = f"SN{n}"[:12]
        raw = p.encode(value)
    else:
        p = Point(table="input", address=0, type=kind, count=2 if kind == "uint32" else 1)
        value = n if kind == "uint32" else (n & 0x7FFF) * (-1 if kind == "int16" and n & 1
                                                             else 1)
        raw = p.encode(value)
    assert p.decode(raw) == value


def _reading(*slots: SlotReading, **cab: object) -> CabinetReading:
    return CabinetReading(tuple(slots), cab)


def test_alarm_watch_every_alarm_raises_and_clears() -> None:
    prof = ProfileLibrary().get("sentinel-wc12")
    now = [0.0]
    w = AlarmWatch(prof, door_open_limit_s=30, clock=lambda: now[0])
    ok = [SlotReading(1, False, True, "AA01"), SlotReading(2, False, True, "AA02")]
    assert w.evaluate(_reading(*ok, main_door=False, tamper=False, mains_ok=True)) == ()
    # Door open: nothing until the limit, then door_held_open for that slot.
    r = _reading(SlotReading(1, True, True, "AA01"), ok[1], main_door=True)
    assert w.evaluate(r) == ()
    now[0] = 31.0
    codes = {(a.code, a.compartment) for a in w.evaluate(r)}
    assert codes == {("door_held_open", 1), ("door_held_open", None)}
    # Weapons swapped: both in the wrong slot; an item without a tag; tamper; mains.
    r = _reading(SlotReading(1, False, True, "AA02"), SlotReading(2, False, True, None),
                 tamper=True, mains_ok=False, battery=80)
    got = {(a.code, a.compartment): a for a in w.evaluate(r)}
    assert set(got) == {("wrong_slot", 1), ("tag_unreadable", 2), ("tamper", None),
                        ("mains_lost", None)}
    assert got[("wrong_slot", 1)].message == "slot 1: tag AA02 belongs in slot 2"
    assert got[("tamper", None)].severity == "critical"
    # Back to normal: everything clears.
    assert w.evaluate(_reading(*ok, tamper=False, mains_ok=True)) == ()


def test_configured_assignments_flag_unknown_tags() -> None:
    prof = ProfileLibrary().get("sentinel-wc12")
    w = AlarmWatch(prof, assignments={1: "aa01", 2: "AA02"})
    got = w.evaluate(_reading(SlotReading(1, False, True, "AA01"),
                              SlotReading(2, False, True, "BB99")))
    assert [(a.code, a.compartment) for a in got] == [("unknown_tag", 2)]
