"""Forward-secure sealing of the audit chain head (checkpoints).

The agent must not be able to rewrite history it has already sealed, even though it
writes the log. So, as the systemd journal's sealing does, the sealing key *evolves*:
checkpoint ``e`` is an HMAC-SHA256 made with key ``k_e``, after which the agent replaces
``k_e`` by ``k_{e+1} = SHA-256("edge-agent seal evolve" || k_e)`` and forgets ``k_e``.
The hash is one-way, so whoever takes over the box (or the agent's account) at epoch
``e`` holds only ``k_e`` and cannot forge checkpoints for earlier epochs: records covered
by an earlier checkpoint cannot be rewritten, reordered or truncated without
``edge-agent audit verify`` noticing.

Files in the audit directory:

* ``verify.key`` — ``k_0``, written once when the log is created (mode 0400). From it the
  verifier derives every ``k_e``. **Export it off the box and delete it there**: anyone
  holding it can forge every checkpoint. ``audit verify --key FILE`` uses the exported
  copy.
* ``seal.key`` — the current epoch and key (mode 0600), replaced atomically.
* ``checkpoints.jsonl`` — one sealed checkpoint per line: epoch, seq, hash and time
  (``rec_ts``) of the record at seq, time sealed, boot id, the digests of the indexes of
  segments closed since the previous checkpoint, for retention the horizon it moved
  (``kind: retention``), and the MAC over all of it. ``edge-agent audit checkpoint``
  prints the newest, for shipping off the box; ``audit verify --checkpoint FILE``
  checks the log against it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.errors import StoreError
from edge_agent.store.durable import append_all, atomic_write, private_dir

EVOLVE = b"edge-agent seal evolve"


def evolve(key: bytes) -> bytes:
    return hashlib.sha256(EVOLVE + key).digest()


def derive(k0: bytes, epoch: int) -> bytes:
    key = k0
    for _ in range(epoch):
        key = evolve(key)
    return key


def checkpoint_body(cp: dict[str, Any]) -> bytes:
    """What the MAC covers: every field but the MAC itself (a checkpoint of the first
    format, five fields, gives the same bytes as it always did)."""
    body = {k: v for k, v in cp.items() if k != "mac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def mac(key: bytes, cp: dict[str, Any]) -> str:
    return hmac.new(key, checkpoint_body(cp), hashlib.sha256).hexdigest()


def read_checkpoints(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """Checkpoints in a file, and whether its last line was torn (a crash).

    A line that does not parse elsewhere is returned as ``{"unreadable": ...}``: a power
    cut can leave one (a torn append whose retry sealed the same epoch). It is not by
    itself tampering: a checkpoint that was really removed leaves a gap in the epochs.
    """
    out: list[dict[str, Any]] = []
    torn = False
    if not path.exists():
        return out, torn
    lines = path.read_bytes().split(b"\n")
    for i, raw in enumerate(lines):
        if not raw:
            continue
        try:
            out.append(json.loads(raw))
        except (json.JSONDecodeError, UnicodeDecodeError):
            if i == len(lines) - 1:
                torn = True
            else:
                out.append({"unreadable": raw[:80].decode(errors="replace")})
    return out, torn


@dataclass
class Sealer:
    directory: Path

    def __post_init__(self) -> None:
        self.key_file = self.directory / "seal.key"
        self.verify_file = self.directory / "verify.key"
        self.cp_file = self.directory / "checkpoints.jsonl"
        self.epoch = 0
        self._key: bytes | None = None
        self.problem: str | None = None
        self.last: dict[str, Any] | None = None
        # Closed segment name -> SHA-256 of its index, as sealed in a checkpoint.
        self.sealed_indexes: dict[str, str] = {}
        self.repaired = 0  # damaged checkpoint lines set aside at open

    def open(self, *, fresh_log: bool) -> None:
        """Load the current key; create the key series for a new log. Blocking."""
        checkpoints, torn = read_checkpoints(self.cp_file)
        valid = [c for c in checkpoints if "epoch" in c]
        if torn or len(valid) < len(checkpoints):
            # Torn appends (a crash or power cut): the whole lines are kept, the damaged
            # bytes set aside beside them, so the file stays appendable and verify reads
            # clean lines. A checkpoint really lost still shows as a gap in the epochs.
            raw = self.cp_file.read_bytes()
            good: list[bytes] = []
            bad: list[bytes] = []
            for line in raw.split(b"\n"):
                if not line:
                    continue
                try:
                    doc = json.loads(line)
                    ok = isinstance(doc, dict) and "epoch" in doc
                except (ValueError, UnicodeDecodeError):
                    ok = False
                (good if ok else bad).append(line)
            append_all(self.directory / "checkpoints.damaged", b"".join(
                b"%.6f " % time.time() + line.hex().encode() + b"\n" for line in bad))
            atomic_write(self.cp_file, b"".join(line + b"\n" for line in good), 0o640)
            self.repaired = len(bad)
        self.last = valid[-1] if valid else None
        for c in valid:
            for entry in c.get("segments") or ():
                self.sealed_indexes[str(entry["segment"])] = str(entry["idx_sha256"])
        if self.key_file.exists():
            try:
                doc = json.loads(self.key_file.read_text())
                self.epoch, self._key = int(doc["epoch"]), bytes.fromhex(doc["key"])
            except (ValueError, KeyError, TypeError) as exc:
                self.problem = f"seal.key is unreadable ({exc}); checkpoints are not being made"
                return
        elif fresh_log and not valid:
            k0 = os.urandom(32)
            private_dir(self.directory)
            atomic_write(self.verify_file, json.dumps({
                "epoch": 0, "key": k0.hex(), "created": time.time(),
                "note": "export this file off the box and delete it here (see README)",
            }).encode(), 0o400)
            self.epoch, self._key = 0, k0
            self._store_key()
            return
        else:
            self.problem = ("seal.key is missing: checkpoints cannot be made and earlier "
                            "ones cannot be extended; run 'edge-agent audit verify'")
            return
        if self.last is not None and self.epoch <= int(self.last["epoch"]):
            # Crashed between writing a checkpoint and evolving the key: catch up.
            while self.epoch <= int(self.last["epoch"]):
                assert self._key is not None
                self._key = evolve(self._key)
                self.epoch += 1
            self._store_key()

    def _store_key(self) -> None:
        assert self._key is not None
        atomic_write(self.key_file, json.dumps(
            {"epoch": self.epoch, "key": self._key.hex()}).encode(), 0o600)

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def seal(self, seq: int, head_hash: str, boot: str, *, rec_ts: str | None = None,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write a checkpoint for the record ``seq`` and evolve the key. Blocking.

        ``rec_ts`` is that record's own time (so an exported checkpoint says how old the
        records it seals are); ``extra`` adds sealed fields: ``segments`` (digests of
        closed segments' indexes) and, for retention, ``kind`` and ``horizon``.
        """
        if self._key is None:
            raise StoreError(self.problem or "sealer not open")
        cp: dict[str, Any] = {"epoch": self.epoch, "seq": seq, "hash": head_hash,
                              "ts": time.time(), "boot": boot}
        if rec_ts is not None:
            cp["rec_ts"] = rec_ts
        cp.update(extra or {})
        cp["mac"] = mac(self._key, cp)
        line = json.dumps(cp, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        # All or nothing: a short write on a full disk is cut back off and the key is not
        # evolved, so the retry seals the same epoch and no torn line stays behind.
        append_all(self.cp_file, line)
        self._key = evolve(self._key)
        self.epoch += 1
        self._store_key()
        self.last = cp
        for entry in cp.get("segments") or ():
            self.sealed_indexes[str(entry["segment"])] = str(entry["idx_sha256"])
        return cp
