"""Site configuration: one TOML file per site, validated by a pydantic schema.

Every error names the file, the line and the key path, for example::

    site_configs/bad.toml:14: buses[1].baudrate: Input should be a valid integer

String values may use ``${VAR}`` or ``${VAR:-default}`` to take a value from the
environment (the demo uses it to place simulated ports in a private run directory).
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from edge_agent.contract import DEVICE_CLASSES
from edge_agent.errors import ConfigError
from edge_agent.store.audit import MIN_RETENTION_DAYS


class _Strict(BaseModel):
    # strict: "5" is not a number and "true" is not a boolean (TOML has both types).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SiteSection(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    name: str = ""


class AgentSection(_Strict):
    state_dir: str | None = None
    socket: str | None = None
    poll_interval: float = Field(1.0, gt=0, le=3600)
    command_timeout: float = Field(2.0, gt=0, le=120)
    unlock_settle: float = Field(1.5, ge=0, le=30)
    """How long after an accepted unlock the door may take to read open before the
    outcome is audited door_did_not_open (devices that report doors only)."""
    offline_after: int = Field(3, ge=1, le=100)
    backoff_initial: float = Field(0.5, gt=0, le=600)
    backoff_max: float = Field(30.0, gt=0, le=3600)
    probe_interval: float = Field(30.0, gt=0, le=86400)
    auto_adopt: bool | list[str] = True
    """Which new devices are supervised without a technician: ``true`` (lockers and
    readers), ``false`` (none), or a list of device classes (``"locker"``, ``"reader"``)
    and plugin names. Armoury devices never are: each waits in the inbox to be adopted."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("auto_adopt")
    @classmethod
    def _auto_adopt(cls, v: bool | list[str]) -> bool | list[str]:
        if isinstance(v, list):
            for name in v:
                if name == "armoury":
                    raise ValueError("armoury devices are never adopted automatically; a "
                                     "technician adopts each one ('edge-agent adopt ID')")
                if not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", name):
                    raise ValueError(f"{name!r} is not a device class or plugin name")
        return v

    def auto_adopts(self, device_class: str, plugin: str) -> bool:
        """May a new device of this class, from this plugin, be adopted without a
        technician? Never for an armoury device."""
        if device_class == "armoury":
            return False
        if isinstance(self.auto_adopt, bool):
            return self.auto_adopt
        return device_class in self.auto_adopt or plugin in self.auto_adopt

    @model_validator(mode="after")
    def _backoff_order(self) -> AgentSection:
        if self.backoff_initial > self.backoff_max:
            raise ValueError(f"backoff_initial ({self.backoff_initial:g}) is more than "
                             f"backoff_max ({self.backoff_max:g})")
        return self


class MdnsSection(_Strict):
    enabled: bool = False
    interfaces: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    site_tag: str | None = Field(None, min_length=1, max_length=63)
    """If set, only services whose TXT ``site`` equals it are this site's: on a network
    shared with another site (or another demo), the others' lockers go to the inbox with
    the tag they carry instead of being adopted."""

    @field_validator("interfaces")
    @classmethod
    def _not_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("name at least one interface address (e.g. '127.0.0.1')")
        for addr in v:
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                raise ValueError(f"{addr!r} is not an IP address: name the interface by "
                                 "its address (e.g. '192.168.1.20')") from None
        return v


class SerialDiscoverySection(_Strict):
    usb_autodetect: bool = False
    """Probe every USB-serial port whose VID:PID a plugin lists."""


class DiscoverySection(_Strict):
    mdns: MdnsSection = Field(default_factory=MdnsSection)
    serial: SerialDiscoverySection = Field(default_factory=SerialDiscoverySection)


STANDARD_BAUDS = frozenset({300, 600, 1200, 2400, 4800, 9600, 14400, 19200, 28800, 38400,
                            57600, 76800, 115200, 230400, 460800, 921600, 1_000_000,
                            2_000_000, 3_000_000, 4_000_000})
PORT_SCHEMES = ("socket", "rfc2217")


def check_port(v: str) -> str:
    """A serial port: a device path, or ``socket://host:port`` / ``rfc2217://host:port``
    (pyserial URLs; options after ``?`` allowed)."""
    if not v.strip():
        raise ValueError("the port is empty: a device path or socket://host:port")
    if "://" not in v:
        if not v.startswith("/"):
            raise ValueError(f"{v!r}: give an absolute device path (/dev/serial/by-id/...)")
        return v
    scheme, _, rest = v.partition("://")
    if scheme not in PORT_SCHEMES:
        raise ValueError(f"{scheme}:// is not a transport the agent uses (socket://, "
                         "rfc2217://, or a device path)")
    hostport = rest.split("?", 1)[0].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{v!r}: give host and port, e.g. {scheme}://10.0.0.5:4001")
    return v


class BusConfig(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    """Stable name of the bus; devices on it are keyed by it, never by the tty."""
    port: str
    """A device path (``/dev/serial/by-id/...``) or a pyserial URL (``socket://h:5000``,
    ``rfc2217://h:2217``)."""
    protocol: str | None = None
    """Only run bus probes of this protocol (default: every plugin's probes)."""
    baudrate: int | None = Field(None, ge=300, le=4_000_000)

    @field_validator("port")
    @classmethod
    def _port(cls, v: str) -> str:
        return check_port(v)

    @field_validator("baudrate")
    @classmethod
    def _standard_baud(cls, v: int | None) -> int | None:
        if v is not None and v not in STANDARD_BAUDS:
            raise ValueError(f"{v} is not a standard baud rate (e.g. 9600, 19200, 38400, "
                             "57600, 115200)")
        return v


class StaticDevice(_Strict):
    plugin: str
    identity: str
    model: str = ""
    address: str
    properties: dict[str, Any] = Field(default_factory=dict)


class PluginsSection(_Strict):
    disabled: list[str] = Field(default_factory=list)
    hook_timeout: float = Field(5.0, gt=0, le=120)


class AuditSection(_Strict):
    retention_days: float | None = Field(400.0, ge=MIN_RETENTION_DAYS)
    """Whole audit segments older than this are removed (None: keep for ever; at least
    30 days: ``audit verify`` treats a shorter window as history removed)."""
    segment_max_mb: float = Field(16.0, gt=0, le=4096)
    checkpoint_every: int = Field(1000, ge=1)
    """Seal the chain head after this many records ..."""
    checkpoint_interval: float = Field(60.0, gt=0)
    """... or after this many seconds, whichever comes first."""


class SimulatorConfig(BaseModel):
    """A simulated piece of hardware; keys other than ``plugin`` go to the plugin."""

    model_config = ConfigDict(extra="allow", frozen=True)
    plugin: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class EntitlementsSection(_Strict):
    trusted_keys: list[str] = Field(default_factory=list, max_length=2)
    """Public keys (PEM) of the issuing office whose snapshots this site accepts: the
    current one and, during a rotation, the next (relative to this config file)."""
    badge_key: str | None = None
    """The force's badge key (``badge.key`` from ``entitlements keygen``, mode 0600,
    relative to this config file): card numbers are matched by keyed hash, never stored
    in the clear."""


_CLASS_NAME = r"^[a-z][a-z0-9_-]{0,31}$"
WEAPON_CLASSES = frozenset({"firearm", "taser"})


def compartment_list(spec: str) -> list[int]:
    """``"1-8"``, ``"3"`` or ``"1,3,5-7"`` as compartment numbers (1-based)."""
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"{spec!r}: write compartments as 3, 1-8 or 1,3,5-7")
        a, b = int(lo), int(hi) if sep else int(lo)
        if a < 1 or b < a or b > 512:
            raise ValueError(f"{spec!r}: {part} is not a range of compartments")
        out.extend(range(a, b + 1))
    return out


class StationSlots(_Strict):
    device: str
    compartments: str
    """Which compartments of the device: 3, 1-8 or 1,3,5-7."""
    equipment: str = Field(pattern=_CLASS_NAME)
    """The equipment class they hold: radio, phone, laptop, battery, taser, firearm …"""
    keypad: str | None = Field(None, pattern=r"^[0-9]$")
    """At a station issuing several classes, the keypad digit that chooses this one."""

    @field_validator("compartments")
    @classmethod
    def _parse(cls, v: str) -> str:
        compartment_list(v)
        return v


class Station(_Strict):
    id: str = Field(min_length=1, max_length=64)
    reader: str
    """Device id of the card reader (e.g. osdp:RDR-00000001)."""
    slots: list[StationSlots] = Field(min_length=1)


class EquipmentPolicy(_Strict):
    qualification: str | None = None
    """Qualification an officer needs in the entitlements (default for taser and
    firearm: the class name; none for other kit)."""
    two_person: bool | None = None
    """A second authorised person (armourer role) must badge (default: on for taser and
    firearm)."""
    due_hours: float = Field(12.0, gt=0, le=24 * 14)
    limit: int = Field(1, ge=1, le=20)
    """How many of this class one officer may hold at once."""
    when_stale: Literal["refuse", "allow"] = "refuse"
    """Issue when the entitlements snapshot is expired or missing: weapons always refuse."""
    overdue_grace_hours: float = Field(2.0, ge=0, le=72)
    """After the due time: a warning; after this much more, a critical alarm."""


class RolesSection(_Strict):
    """Unix groups whose members hold each role on the control socket. Without this
    section every caller who can open the socket (mode 0660) holds every role."""

    viewer: list[str] = Field(default_factory=list)
    """read only: status, devices, events, inbox, custody"""
    technician: list[str] = Field(default_factory=list)
    """devices, inbox, out of service, identify, unlocks of non-weapon compartments"""
    armourer: list[str] = Field(default_factory=list)
    """weapon compartment opens (two armourers), entitlements load"""


class UplinkSection(_Strict):
    """The site's link to headquarters: an MQTT 5 broker (Mosquitto, EMQX, HiveMQ …)."""

    broker: str = Field(pattern=r"^mqtts?://[^/:]+(:\d+)?/?$")
    """mqtt://host:port or mqtts://host:port (TLS)"""
    topic_prefix: str = Field("edge-agent", pattern=r"^[A-Za-z0-9_/.-]{1,64}$")
    username: str | None = None
    password_file: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    status_interval: float = Field(10.0, ge=1, le=3600)
    disk_budget_mb: float = Field(2048.0, gt=0)
    """Backlog not yet forwarded above this is a critical alarm (nothing is dropped)."""


class CustodySection(_Strict):
    second_person_s: float = Field(60.0, gt=0, le=600)
    """How long a second person has to badge for a two-person issue."""
    take_s: float = Field(30.0, gt=0, le=600)
    """How long an opened compartment waits for the item to be taken or placed."""


def _once(values: list[str], message: str) -> None:
    """Raise ``message`` (formatted with the value) for the first value seen twice."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(message.format(value))
        seen.add(value)


class SiteConfig(_Strict):
    site: SiteSection
    agent: AgentSection = Field(default_factory=AgentSection)
    discovery: DiscoverySection = Field(default_factory=DiscoverySection)
    buses: list[BusConfig] = Field(default_factory=list)
    devices: list[StaticDevice] = Field(default_factory=list)
    plugins: PluginsSection = Field(default_factory=PluginsSection)
    audit: AuditSection = Field(default_factory=AuditSection)
    entitlements: EntitlementsSection = Field(default_factory=EntitlementsSection)
    stations: list[Station] = Field(default_factory=list)
    policy: dict[str, EquipmentPolicy] = Field(default_factory=dict)
    custody: CustodySection = Field(default_factory=CustodySection)
    roles: RolesSection | None = None
    uplink: UplinkSection | None = None
    vendor: dict[str, dict[str, Any]] = Field(default_factory=dict)
    simulators: list[SimulatorConfig] = Field(default_factory=list)

    @field_validator("policy")
    @classmethod
    def _weapons_fail_closed(cls, v: dict[str, EquipmentPolicy]) -> dict[str, EquipmentPolicy]:
        for name, pol in v.items():
            if not re.match(_CLASS_NAME, name):
                raise ValueError(f"{name!r}: an equipment class is a lower-case name")
            if name in WEAPON_CLASSES and pol.when_stale == "allow":
                raise ValueError(f"{name}: when_stale = \"allow\" is not possible for "
                                 "weapons: without current entitlements they are refused")
            if name in WEAPON_CLASSES and pol.two_person is False:
                raise ValueError(f"{name}: two_person cannot be switched off for weapons")
        return v

    @field_validator("devices")
    @classmethod
    def _unique_devices(cls, v: list[StaticDevice]) -> list[StaticDevice]:
        _once([d.identity for d in v], "device identity {!r} is used twice")
        return v

    @field_validator("stations")
    @classmethod
    def _unique_stations(cls, v: list[Station]) -> list[Station]:
        _once([st.id for st in v], "station id {!r} is used twice")
        _once([st.reader for st in v], "reader {!r} serves two stations")
        return v

    def equipment_policy(self, equipment: str) -> EquipmentPolicy:
        """The policy of a class, with the weapon defaults filled in."""
        pol = self.policy.get(equipment) or EquipmentPolicy()
        weapon = equipment in WEAPON_CLASSES
        return pol.model_copy(update={
            "qualification": pol.qualification or (equipment if weapon else None),
            "two_person": True if weapon else bool(pol.two_person),
            "when_stale": "refuse" if weapon else pol.when_stale})

    @field_validator("buses")
    @classmethod
    def _unique_bus_ids(cls, v: list[BusConfig]) -> list[BusConfig]:
        _once([bus.id for bus in v], "bus id {!r} is used twice")
        return v


# --------------------------------------------------------------------------- permissions


def unsafe_paths(config: SiteConfig, config_path: str | Path,
                 state_dir: Path | None = None) -> list[str]:
    """Files and directories the agent trusts that anyone on the box could change: the
    config, its directory, the state directory and every key the config names. Each
    problem names the path and the chmod that fixes it."""
    base = Path(config_path).parent if config_path else Path.cwd()
    paths: list[Path] = []
    if config_path:
        paths += [Path(config_path), base]
    if state_dir is not None:
        paths.append(state_dir)
    paths += [base / k for k in config.entitlements.trusted_keys]
    if config.entitlements.badge_key:
        paths.append(base / config.entitlements.badge_key)
    up = config.uplink
    if up is not None:
        paths += [base / p for p in (up.ca, up.cert, up.key, up.password_file) if p]
    problems = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            continue  # missing files are reported by the checks that read them
        if st.st_mode & 0o002 and not (p.is_dir() and st.st_mode & 0o1000):
            kind = "directory" if p.is_dir() else "file"
            problems.append(f"{p}: the {kind} is writable by every user on this box, who "
                            f"could change what the agent trusts; fix: chmod o-w {p}")
    return problems


# --------------------------------------------------------------------------- loading

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, missing: list[str]) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            got = os.environ.get(name)
            if got is None:
                if default is None:
                    missing.append(name)
                    return m.group(0)
                return default
            return got

        return _ENV_RE.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, missing) for v in value]
    return value


def key_lines(source: str) -> dict[tuple[str | int, ...], int]:
    """Map key paths to the 1-based line that defines them.

    Covers tables, arrays of tables and (dotted) keys, which is how site configs are
    written. Used only to point error messages at a line.
    """
    lines: dict[tuple[str | int, ...], int] = {}
    current: tuple[str | int, ...] = ()
    counts: dict[tuple[str | int, ...], int] = {}
    part = r'(?:[A-Za-z0-9_-]+|"[^"]*")'
    key_re = re.compile(rf"^\s*({part}(?:\s*\.\s*{part})*)\s*=")

    def split(dotted: str) -> tuple[str, ...]:
        return tuple(p.strip().strip('"') for p in dotted.split("."))

    for no, raw in enumerate(source.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[["):
            name = split(line[2 : line.index("]]")])
            base: tuple[str | int, ...] = tuple(name)
            idx = counts.get(base, 0)
            counts[base] = idx + 1
            current = (*base, idx)
            lines.setdefault(base, no)
            lines[current] = no
            continue
        if line.startswith("["):
            current = tuple(split(line[1 : line.index("]")]))
            lines.setdefault(current, no)
            continue
        m = key_re.match(raw)
        if m:
            path = (*current, *split(m.group(1)))
            lines.setdefault(path, no)
    return lines


def _line_for(loc: Sequence[str | int], lines: Mapping[tuple[str | int, ...], int]) -> int | None:
    for n in range(len(loc), 0, -1):
        got = lines.get(tuple(loc[:n]))
        if got is not None:
            return got
    return None


def _fmt_loc(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


M = TypeVar("M", bound=BaseModel)


def validate_toml(model: type[M], source: str, path: str = "<string>", *,
                  expand_env: bool = False, hint: str = "") -> M:
    """Parse TOML held in ``source`` and validate it against a pydantic ``model``.

    Raises :class:`ConfigError` whose problems each read ``FILE:LINE: key.path: what``.
    Public for plugins that read their own TOML files (device profiles, say), so their
    errors look like the site config's. ``hint`` is appended to "unknown key".
    """
    try:
        raw = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already ends with "(at line N, column M)".
        m = re.search(r"at line (\d+)", str(exc))
        where = f"{path}:{m.group(1)}" if m else path
        raise ConfigError(path, [f"{where}: not valid TOML: {exc}"]) from exc
    if expand_env:
        missing: list[str] = []
        raw = _expand(raw, missing)
        if missing:
            raise ConfigError(
                path,
                [f"{path}: environment variable ${{{name}}} is not set"
                 for name in sorted(set(missing))],
            )
    lines = key_lines(source)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [p for p in err["loc"] if isinstance(p, (str, int))]
            line = _line_for(loc, lines)
            if line is None or len(loc) == 1:
                # A check of a whole table ([policy.*], say): the line of the entry the
                # message names, else of the table's first entry.
                under = sorted((ln, k) for k, ln in lines.items()
                               if len(k) > len(loc) and list(k[:len(loc)]) == loc)
                named = [ln for ln, k in under if f"{k[len(loc)]}" in str(err["msg"])]
                firsts = named or [ln for ln, _k in under]
                line = firsts[0] if firsts else line
            where = f"{path}:{line}" if line else path
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling" + (f"; {hint})" if hint else ")")
            elif err["type"] == "missing":
                msg = "required key is missing"
            problems.append(f"{where}: {_fmt_loc(loc)}: {msg}")
        raise ConfigError(path, problems) from exc


def parse_site_config(source: str, path: str = "<string>") -> SiteConfig:
    """Parse and validate a site config held in ``source``; raise :class:`ConfigError`."""
    return validate_toml(SiteConfig, source, path, expand_env=True,
                         hint="see site_configs/example.toml")


MAX_CONFIG_BYTES = 1024 * 1024


def load_site_config(path: str | os.PathLike[str]) -> SiteConfig:
    """Read and validate a site config file; raise :class:`ConfigError` on any problem."""
    p = Path(path)
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            # A FIFO would block the read for ever, /dev/zero would fill memory.
            raise ConfigError(str(p), [f"{p}: not a regular file: give the site config "
                                       "file itself"])
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(str(p), [f"{p}: {st.st_size} bytes: a site config is at most "
                                       f"{MAX_CONFIG_BYTES // 1024} KiB"])
        source = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(str(p), [f"{p}: no such file"]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), [f"{p}: cannot read: {exc}"]) from exc
    return parse_site_config(source, str(p))


def check_plugins_named(config: SiteConfig, path: str, source: str | None,
                        loaded: set[str]) -> list[str]:
    """Every ``[[devices]]`` and ``[[simulators]]`` names a plugin that is loaded (what
    ``run`` would otherwise trip on later), with file:line."""
    lines = key_lines(source) if source else {}
    problems = []
    named: list[tuple[str, list[str]]] = [
        ("devices", [d.plugin for d in config.devices]),
        ("simulators", [sc.plugin for sc in config.simulators])]
    if isinstance(config.agent.auto_adopt, list):
        named.append(("agent.auto_adopt", [n for n in config.agent.auto_adopt]))
    for table, plugins in named:
        for i, plugin in enumerate(plugins):
            if table == "agent.auto_adopt":
                if plugin in DEVICE_CLASSES or plugin in loaded:
                    continue
                line = _line_for(("agent", "auto_adopt"), lines)
                where = f"{path}:{line}" if line else path
                classes = ", ".join(c for c in DEVICE_CLASSES if c != "armoury")
                problems.append(f"{where}: agent.auto_adopt[{i}]: {plugin!r} is neither a "
                                f"device class ({classes}) nor a loaded plugin "
                                f"({', '.join(sorted(loaded))})")
                continue
            if plugin not in loaded:
                line = _line_for((table, i, "plugin"), lines)
                where = f"{path}:{line}" if line else path
                problems.append(f"{where}: {table}[{i}].plugin: no loaded plugin "
                                f"{plugin!r} (installed: {', '.join(sorted(loaded))})")
    return problems


def check_bus_protocols(config: SiteConfig, path: str, source: str | None,
                        protocols: set[str]) -> list[str]:
    """A bus that names a ``protocol`` no installed plugin probes would never find a board:
    say so with its line, before anything starts."""
    lines = key_lines(source) if source else {}
    problems = []
    for i, bus in enumerate(config.buses):
        if bus.protocol is not None and bus.protocol not in protocols:
            line = _line_for(("buses", i, "protocol"), lines)
            where = f"{path}:{line}" if line else path
            problems.append(f"{where}: buses[{i}].protocol: no installed plugin probes "
                            f"{bus.protocol!r} (known: {', '.join(sorted(protocols)) or 'none'})")
    return problems


def check_vendor_settings(
    config: SiteConfig,
    path: str,
    source: str | None,
    schemas: Mapping[str, Mapping[str, Any] | None],
) -> list[str]:
    """Validate ``[vendor.<plugin>]`` tables against the plugins' declared settings."""
    lines = key_lines(source) if source else {}
    problems: list[str] = []
    for plugin, table in config.vendor.items():
        if plugin not in schemas:
            line = _line_for(("vendor", plugin), lines)
            where = f"{path}:{line}" if line else path
            problems.append(f"{where}: vendor.{plugin}: no loaded plugin is called {plugin!r}")
            continue
        schema = schemas[plugin] or {}
        for key, value in table.items():
            line = _line_for(("vendor", plugin, key), lines)
            where = f"{path}:{line}" if line else path
            if key not in schema:
                known = ", ".join(sorted(schema)) or "none"
                problems.append(
                    f"{where}: vendor.{plugin}.{key}: unknown key (plugin accepts: {known})"
                )
                continue
            typ = schema[key][0]
            ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
            if typ is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                problems.append(
                    f"{where}: vendor.{plugin}.{key}: expected {typ.__name__}, "
                    f"got {type(value).__name__}"
                )
                continue
            allowed = schema[key][3] if len(schema[key]) > 3 else None
            if allowed is not None and value not in allowed:
                problems.append(
                    f"{where}: vendor.{plugin}.{key}: {value!r} is not allowed (one of "
                    f"{', '.join(repr(a) for a in allowed)})"
                )
    return problems


def vendor_settings(
    config: SiteConfig, plugin: str, schema: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The plugin's settings: declared defaults overlaid with the site's table."""
    out = {key: spec[1] for key, spec in (schema or {}).items()}
    out.update(config.vendor.get(plugin, {}))
    return out
