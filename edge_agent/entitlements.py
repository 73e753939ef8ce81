"""Entitlements: a signed snapshot of the force's training records, decided on the box.

The issuing office (headquarters' training unit) turns a CSV export of training records
into a snapshot and signs it with its Ed25519 key; each site lists the public keys it
trusts (two, so a key can be rotated) and verifies every snapshot before it is used.
Nothing on the box needs the network to decide who may take what.

Badge numbers never appear in the clear in a snapshot or on the box: each is stored as
HMAC-SHA256 under the force's *badge key* (a secret file the office and the sites share),
so a reader's card number is hashed the same way and compared.

CSV columns (header row required, UTF-8)::

    officer_id,name,roles,badges,qualifications
    PC1234,Alex Smith,officer,04A1B2C3;04FFEE01,taser:2027-03-31;firearm:2026-12-31

``roles`` and ``badges`` are ``;``-separated; ``qualifications`` are ``class:YYYY-MM-DD``
(the date the qualification lapses), ``;``-separated. A bad row is reported as
``FILE:LINE: column: problem``.

Snapshot file (JSON): ``{"snapshot": {...}, "signature": BASE64, "key_id": HEX}`` where the
signature covers the canonical JSON of ``snapshot`` (keys sorted, no whitespace).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import hmac
import io
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from edge_agent.errors import EdgeAgentError
from edge_agent.store.durable import atomic_write

FORMAT = 1
COLUMNS = ("officer_id", "name", "roles", "badges", "qualifications")
CLOCK_SKEW = dt.timedelta(minutes=5)  # a snapshot issued this far "in the future" is fine
_CLASS = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class EntitlementError(EdgeAgentError):
    """A snapshot, key or records file is unusable; the message says why."""

    snapshot_id: str | None = None  # the refused snapshot's id, when it could be read


def canonical(obj: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8 (not \\u escapes): the bytes that are signed.

    orjson writes them straight to bytes (json.dumps + encode held the text twice: 50 MB
    at the peak of a 100,000-officer load); the output is the same for the values a
    snapshot holds (strings, integers, lists, objects, null, booleans; tests compare)."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise EntitlementError(f"cannot be signed or verified: {exc}") from exc


def parse(raw: bytes) -> Any:
    """A snapshot file or message as JSON, straight from its bytes (no decoded text
    copy: 25 MB less at the peak for 100,000 officers). ValueError if it is not JSON."""
    return orjson.loads(raw)


def _signed_part(doc: dict[str, Any], whole: bytes) -> memoryview | None:
    """The canonical bytes of ``doc["snapshot"]`` inside ``canonical(doc)``, without a
    second serialization, when ``doc`` holds exactly the signed envelope's three keys
    (sorted: key_id, signature, snapshot)."""
    if set(doc) != {"key_id", "signature", "snapshot"}:
        return None
    head = (b'{"key_id":' + canonical(doc["key_id"]) + b',"signature":'
            + canonical(doc["signature"]) + b',"snapshot":')
    if not whole.startswith(head) or not whole.endswith(b"}"):
        return None
    return memoryview(whole)[len(head):-1]


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def badge_hash(badge_key: bytes, badge: str) -> str:
    """A card number as the snapshot and the box keep it (never in the clear)."""
    return hmac.new(badge_key, badge.strip().upper().encode(), hashlib.sha256).hexdigest()


# ------------------------------------------------------------------ keys


def keygen(out: Path) -> tuple[Path, Path, str]:
    """Write ``signing.key`` (0600, for the issuing office only), ``signing.pub`` (for the
    sites' config) and ``badge.key`` (0600, shared with the sites) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    priv_path, pub_path = out / "signing.key", out / "signing.pub"
    for p in (priv_path, pub_path, out / "badge.key"):
        if p.exists():
            raise EntitlementError(f"{p} exists: keys are never overwritten")
    atomic_write(priv_path, private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), 0o600)
    atomic_write(pub_path, private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
    atomic_write(out / "badge.key", base64.b64encode(os.urandom(32)) + b"\n", 0o600)
    return priv_path, pub_path, key_id(private.public_key())


def _load_pem(path: Path, private: bool) -> object:
    """A PEM key file, as an EntitlementError naming the file when it is none."""
    kind = "private" if private else "public"
    try:
        data = path.read_bytes()
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except (OSError, ValueError, TypeError) as exc:
        raise EntitlementError(f"{path}: not an Ed25519 {kind} key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey if private else Ed25519PublicKey):
        raise EntitlementError(f"{path}: not an Ed25519 {kind} key")
    return key


def load_private(path: Path) -> Ed25519PrivateKey:
    key = _load_pem(path, private=True)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    key = _load_pem(path, private=False)
    assert isinstance(key, Ed25519PublicKey)
    return key


def load_badge_key(path: Path) -> bytes:
    try:
        key = base64.b64decode(path.read_bytes().strip(), validate=True)
    except (OSError, ValueError) as exc:
        raise EntitlementError(f"{path}: not a badge key ({exc})") from exc
    if len(key) < 16:
        raise EntitlementError(f"{path}: a badge key is at least 16 bytes")
    return key


# ------------------------------------------------------------------ records → snapshot


def parse_records(path: Path, badge_key: bytes) -> list[dict[str, Any]]:
    """Officers from a CSV export; any bad row raises with ``FILE:LINE: column: why``."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise EntitlementError(f"{path}: cannot read ({exc})") from exc
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise EntitlementError(f"{path}:1: header: missing column(s) {', '.join(missing)} "
                               f"(expected {','.join(COLUMNS)})")
    officers: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    seen_badges: dict[str, str] = {}
    problems: list[str] = []
    for row in reader:
        line = reader.line_num

        def bad(col: str, why: str, line: int = line) -> None:
            problems.append(f"{path}:{line}: {col}: {why}")

        oid = (row.get("officer_id") or "").strip()
        if not oid:
            bad("officer_id", "empty")
        elif oid in seen_ids:
            bad("officer_id", f"{oid} appears twice")
        seen_ids.add(oid)
        roles = [r.strip() for r in (row.get("roles") or "").split(";") if r.strip()]
        badges = [b.strip() for b in (row.get("badges") or "").split(";") if b.strip()]
        hashed = []
        for b in badges:
            if not re.fullmatch(r"[0-9A-Fa-f]{4,32}", b):
                bad("badges", f"{b!r} is not a card number (4-32 hex digits)")
                continue
            h = badge_hash(badge_key, b)
            if h in seen_badges:
                bad("badges", f"card {b} is also {seen_badges[h]}'s")
            seen_badges[h] = oid
            hashed.append(h)
        quals: dict[str, str] = {}
        for q in (row.get("qualifications") or "").split(";"):
            q = q.strip()
            if not q:
                continue
            cls, _, until = q.partition(":")
            if not _CLASS.match(cls):
                bad("qualifications", f"{q!r}: the class must be a lower-case name")
                continue
            try:
                dt.date.fromisoformat(until)
            except ValueError:
                bad("qualifications", f"{q!r}: give the lapse date as class:YYYY-MM-DD")
                continue
            quals[cls] = until
        officers.append({"id": oid, "name": (row.get("name") or "").strip(), "roles": roles,
                         "badges": hashed, "qualifications": quals})
    if problems:
        raise EntitlementError("\n".join(problems))
    return officers


def sign(private: Ed25519PrivateKey, officers: list[dict[str, Any]], valid_hours: float,
         now: dt.datetime | None = None) -> dict[str, Any]:
    if not 0 < valid_hours <= 24 * 14:
        raise EntitlementError("--valid-hours must be more than 0 and at most 336 (14 days): "
                               "offline caches in the trade revalidate at least fortnightly")
    now = now or dt.datetime.now(dt.UTC)
    snapshot = {"format": FORMAT, "id": uuid.uuid4().hex,
                "issued": now.isoformat(timespec="seconds"),
                "expires": (now + dt.timedelta(hours=valid_hours)).isoformat(
                    timespec="seconds"),
                "officers": officers}
    signature = private.sign(canonical(snapshot))
    return {"snapshot": snapshot, "key_id": key_id(private.public_key()),
            "signature": base64.b64encode(signature).decode()}


# ------------------------------------------------------------------ commands from HQ

COMMAND_KINDS = ("lockdown", "release")
COMMAND_MAX_AGE = dt.timedelta(hours=24)


def sign_command(private: Ed25519PrivateKey, kind: str, sites: list[str], reason: str,
                 now: dt.datetime | None = None) -> dict[str, Any]:
    """A signed headquarters command (lockdown or release of armoury issue) for the
    named sites (``*``: all), with the same key as the entitlements."""
    if kind not in COMMAND_KINDS:
        raise EntitlementError(f"kind must be one of {', '.join(COMMAND_KINDS)}")
    if not sites or not reason.strip():
        raise EntitlementError("name the sites (or *) and give a reason")
    now = now or dt.datetime.now(dt.UTC)
    command = {"kind": kind, "scope": "armoury", "sites": sorted(sites),
               "reason": reason.strip(), "id": uuid.uuid4().hex,
               "issued": now.isoformat(timespec="seconds")}
    return {"command": command, "key_id": key_id(private.public_key()),
            "signature": base64.b64encode(private.sign(canonical(command))).decode()}


def verify_command(doc: Any, trusted: dict[str, Ed25519PublicKey], site: str,
                   after: str = "", now: dt.datetime | None = None) -> dict[str, Any]:
    """The command in ``doc`` if a trusted key signed it, it names this site, it is not
    from the future, not older than a day and newer than the last one applied
    (``after``: its ``issued``), so an old message cannot be replayed."""
    now = now or dt.datetime.now(dt.UTC)
    if not isinstance(doc, dict) or not {"command", "signature", "key_id"} <= set(doc):
        raise EntitlementError("not a signed command (command, signature, key_id)")
    public = trusted.get(str(doc["key_id"]))
    if public is None:
        raise EntitlementError(f"signed with key {doc['key_id']}, which this site does "
                               "not trust")
    try:
        public.verify(base64.b64decode(str(doc["signature"]), validate=True),
                      canonical(doc["command"]))
    except (InvalidSignature, ValueError) as exc:
        raise EntitlementError("the signature does not match the command: altered or "
                               "forged") from exc
    cmd = doc["command"]
    try:
        issued = dt.datetime.fromisoformat(str(cmd["issued"]))
        kind, sites = str(cmd["kind"]), list(cmd["sites"])
    except (KeyError, TypeError, ValueError) as exc:
        raise EntitlementError(f"the command is malformed ({exc})") from exc
    if kind not in COMMAND_KINDS:
        raise EntitlementError(f"unknown command {kind!r}")
    if site not in sites and "*" not in sites:
        raise EntitlementError(f"the command is for {', '.join(sites)}, not {site}")
    if issued > now + CLOCK_SKEW:
        raise EntitlementError(f"issued {issued.isoformat()}, in the future")
    if now - issued > COMMAND_MAX_AGE:
        raise EntitlementError(f"issued {issued.isoformat()}, more than a day ago: replayed?")
    if after and issued <= dt.datetime.fromisoformat(after):
        raise EntitlementError(f"issued {issued.isoformat()}, not after the last command "
                               f"applied ({after}): replayed?")
    return dict(cmd)


# ------------------------------------------------------------------ verify on the box


class Officers(Mapping[str, dict[str, Any]]):
    """Officer id -> record, kept compact: each record is held as its JSON bytes and
    parsed when asked for (a few microseconds). 100,000 parsed records are ~110 MB of
    Python objects; their bytes are ~20 MB, which is what keeps a force-sized snapshot
    inside the box's memory budget (issue 11: <= 150 MB peak)."""

    __slots__ = ("_raw", "by_badge")

    def __init__(self) -> None:
        self._raw: dict[str, bytes] = {}
        self.by_badge: dict[str, str] = {}  # badge hash -> officer id

    def add(self, record: Any) -> str:
        if not isinstance(record, dict):
            raise TypeError(f"an officer is {type(record).__name__}, not an object")
        oid = record["id"]
        if not isinstance(oid, str):
            raise TypeError(f"officer id {oid!r} is not a string")
        badges = record.get("badges", [])
        if not isinstance(badges, list):
            raise TypeError(f"officer {oid}: badges is not a list")
        # A copy: orjson's own bytes keep its ~4 KB output buffer (400 MB at 100,000).
        self._raw[oid] = bytes(memoryview(orjson.dumps(record)))
        for b in badges:
            if not isinstance(b, str):
                raise TypeError(f"officer {oid}: a badge is not a string")
            self.by_badge[b] = oid
        return oid

    def __getitem__(self, key: str) -> dict[str, Any]:
        return orjson.loads(self._raw[key])  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, key: object) -> bool:
        return key in self._raw


@dataclass(frozen=True)
class Snapshot:
    id: str
    issued: dt.datetime
    expires: dt.datetime
    key_id: str
    officers: Mapping[str, dict[str, Any]]  # officer id -> record
    by_badge: dict[str, str]  # badge hash -> officer id

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "issued": self.issued.isoformat(),
                "expires": self.expires.isoformat(), "key_id": self.key_id,
                "officers": len(self.officers)}


def _refused(why: str, snapshot_id: Any = None) -> EntitlementError:
    exc = EntitlementError(why)
    exc.snapshot_id = snapshot_id if isinstance(snapshot_id, str) else None
    return exc


def _check_signature(kid: str, signature: Any, signed: bytes | memoryview,
                     trusted: dict[str, Ed25519PublicKey], snapshot_id: Any) -> None:
    public = trusted.get(kid)
    if public is None:
        raise _refused(f"signed with key {kid}, which this site does not trust "
                       f"(trusted: {', '.join(sorted(trusted)) or 'none'})", snapshot_id)
    try:
        public.verify(base64.b64decode(str(signature), validate=True), signed)
    except (InvalidSignature, ValueError) as exc:
        raise _refused("the signature does not match the snapshot: altered or forged",
                       snapshot_id) from exc


def _build(snap: Any, officers: Officers | None, kid: str, now: dt.datetime,
           allow_expired: bool) -> Snapshot:
    """The checks after the signature: shape, format, dates; ``officers`` already
    indexed, or taken from ``snap["officers"]``."""
    sid = snap.get("id") if isinstance(snap, dict) else None
    try:
        issued = dt.datetime.fromisoformat(snap["issued"])
        expires = dt.datetime.fromisoformat(snap["expires"])
        if officers is None:
            officers = Officers()
            for o in snap["officers"]:
                officers.add(o)
    except (KeyError, TypeError, ValueError) as exc:
        raise _refused(f"the snapshot is malformed ({exc})", sid) from exc
    if snap.get("format") != FORMAT:
        raise _refused(f"snapshot format {snap.get('format')} (this agent reads "
                       f"{FORMAT})", sid)
    if issued > now + CLOCK_SKEW:
        raise _refused(f"issued {issued.isoformat()}, in the future: check this "
                       "box's clock and the office's", sid)
    if expires <= now and not allow_expired:
        raise _refused(f"expired {expires.isoformat()}: ask the issuing office for "
                       "a fresh snapshot", sid)
    return Snapshot(str(snap["id"]), issued, expires, kid, officers, officers.by_badge)


def verify(doc: Any, trusted: dict[str, Ed25519PublicKey],
           now: dt.datetime | None = None, *, allow_expired: bool = False,
           signed: bytes | memoryview | None = None) -> Snapshot:
    """The snapshot in ``doc`` if a trusted key signed it and it is in date; otherwise
    EntitlementError saying why. ``allow_expired``: a genuine but expired snapshot is
    returned (for identifying officers under a ``when_stale = "allow"`` policy)."""
    now = now or dt.datetime.now(dt.UTC)
    if not isinstance(doc, dict) or not {"snapshot", "signature", "key_id"} <= set(doc):
        raise _refused("not an entitlements snapshot (snapshot, signature, key_id)")
    snap = doc["snapshot"]
    sid = snap.get("id") if isinstance(snap, dict) else None
    _check_signature(str(doc["key_id"]), doc["signature"],
                     signed if signed is not None else canonical(snap), trusted, sid)
    return _build(snap, None, str(doc["key_id"]), now, allow_expired)


# The signed envelope as ``sign`` writes it (canonical: keys sorted, no spaces). Key ids
# and base64 signatures need no JSON escapes, so these bytes are their canonical form.
_ENVELOPE = re.compile(rb'\{"key_id":"([0-9A-Za-z_-]{1,128})","signature":"'
                       rb'([A-Za-z0-9+/=]{1,256})","snapshot":')
_OFFICERS = b',"officers":['
_NEXT = b'},{"'
_CHUNK = 1 << 20


def _officers_in_slices(raw: bytes, start: int, stop: int) -> Officers | None:
    """The officers array ``raw[start:stop]`` (its content, without brackets) parsed a
    slice at a time, so the whole array never exists as Python objects at once.

    A slice ends at ``},{"``, which in JSON can only be between two objects (a quote
    inside a string is escaped); if that comma is inside an officer rather than between
    two, the slice does not parse (its brackets do not balance) and it is extended to the
    next candidate. Two slices that both parse as arrays are, by JSON's grammar, the
    array's elements in order. None: give up, parse the document whole."""
    officers = Officers()
    pos = start
    while pos < stop:
        cut = raw.find(_NEXT, pos + _CHUNK, stop) if pos + _CHUNK < stop else -1
        for _ in range(64):
            end = stop if cut < 0 else cut + 1
            try:
                items = orjson.loads(b"[" + raw[pos:end] + b"]")
                break
            except orjson.JSONDecodeError:
                if cut < 0:
                    return None
                cut = raw.find(_NEXT, cut + 1, stop)
        else:
            return None
        for o in items:
            officers.add(o)
        del items
        pos = end + 1
    return officers


def _verify_canonical(raw: bytes, trusted: dict[str, Ed25519PublicKey], now: dt.datetime,
                      allow_expired: bool) -> Snapshot | None:
    """The snapshot in ``raw`` when it is the canonical envelope, verified over its own
    bytes and indexed a slice at a time. None: not canonical (or signed over other
    bytes), judge it by the general path."""
    m = _ENVELOPE.match(raw)
    if m is None or not raw.endswith(b"]}}"):
        return None
    s, e = m.end(), len(raw) - 1  # the snapshot's bytes
    i = raw.find(_OFFICERS, s, e)
    if i < 0:
        return None
    try:
        head = orjson.loads(raw[s:i] + b"}")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(head, dict) or "officers" in head:
        return None
    try:
        _check_signature(m.group(1).decode(), m.group(2).decode(),
                         memoryview(raw)[s:e], trusted, head.get("id"))
    except EntitlementError:
        if m.group(1).decode() not in trusted:
            raise
        return None  # maybe not canonical after all: the general path decides
    try:
        officers = _officers_in_slices(raw, i + len(_OFFICERS), e - 2)
    except (KeyError, TypeError) as exc:
        raise _refused(f"the snapshot is malformed ({exc})", head.get("id")) from exc
    if officers is None:
        return None
    return _build(head, officers, m.group(1).decode(), now, allow_expired)


def verify_bytes(raw: bytes, trusted: dict[str, Ed25519PublicKey],
                 now: dt.datetime | None = None, *,
                 allow_expired: bool = False) -> tuple[Snapshot, bytes]:
    """A snapshot file or message, verified as ``verify`` does, and the bytes to keep
    on the box (its canonical form). A canonical file (as ``sign`` writes it) is
    verified over its own bytes and its officers parsed a slice at a time; anything else
    (pretty-printed, keys reordered) is parsed whole and judged on its canonical form."""
    now = now or dt.datetime.now(dt.UTC)
    snap = _verify_canonical(raw, trusted, now, allow_expired)
    if snap is not None:
        return snap, raw
    try:
        doc = parse(raw)
    except ValueError as exc:
        raise _refused(f"not JSON ({exc})") from exc
    whole = canonical(doc) if isinstance(doc, dict) else b""
    part = _signed_part(doc, whole) if isinstance(doc, dict) else None
    snap = verify(doc, trusted, now, allow_expired=allow_expired, signed=part)
    del doc
    return snap, whole


def trusted_keys(paths: list[Path]) -> dict[str, Ed25519PublicKey]:
    keys = [load_public(p) for p in paths]
    return {key_id(k): k for k in keys}


class EntitlementStore:
    """The snapshot in force on this box (``STATE/entitlements.json``)."""

    FILE = "entitlements.json"

    def __init__(self, state_dir: Path, trusted: dict[str, Ed25519PublicKey]) -> None:
        self.path = state_dir / self.FILE
        self.trusted = trusted
        self.current: Snapshot | None = None
        self.stale: Snapshot | None = None  # genuine but expired: identifies, grants little
        self.problem: str | None = None

    def open(self) -> None:
        """Load and re-verify what is on disk (blocking). A snapshot that no longer
        verifies (expired, key withdrawn, altered) is not used; ``problem`` says why."""
        if not self.path.exists():
            self.problem = "no entitlements loaded"
            return
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            self.current, self.problem = None, f"entitlements on disk unreadable: {exc}"
            return
        try:
            self.current, _ = verify_bytes(raw, self.trusted)
            self.problem = None
        except EntitlementError as exc:
            self.current, self.problem = None, f"entitlements on disk unusable: {exc}"
            try:
                self.stale, _ = verify_bytes(raw, self.trusted, allow_expired=True)
            except EntitlementError:
                self.stale = None

    def in_force(self, now: dt.datetime | None = None) -> tuple[Snapshot | None, bool]:
        """The snapshot to identify officers with, and whether it is stale (expired, or
        only an expired one is on the box). ``(None, True)``: nobody can be identified."""
        now = now or dt.datetime.now(dt.UTC)
        snap = self.current or self.stale
        if snap is None:
            return None, True
        return snap, snap.expires <= now or self.current is None

    def load(self, raw: bytes) -> Snapshot:
        """Verify a snapshot file's bytes, then swap atomically (blocking). Nothing
        changes if it fails. Canonical bytes (as ``sign`` writes them) are verified and
        stored as they are, their officers indexed a slice at a time."""
        snap, keep = verify_bytes(raw, self.trusted)
        atomic_write(self.path, keep)
        self.current, self.stale, self.problem = snap, None, None
        return snap
