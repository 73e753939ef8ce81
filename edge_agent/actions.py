"""Every action the core writes into the audit trail: the trail's vocabulary.

The list of event types of a police audit trail is itself a contract (auditors,
headquarters and exports read these names), so it is one enumeration, documented here
and listed in the README (a test keeps the two the same). Values are plain strings in
the records; a new action is added here first.
"""

from __future__ import annotations

import enum


class Action(enum.StrEnum):
    # The agent and its log
    AGENT_STARTED = "agent_started"
    AGENT_STOPPED = "agent_stopped"
    AUDIT_RECOVERED = "audit_recovered"
    AUDIT_LOG_RECOVERED = "audit_log_recovered"
    AUDIT_RETENTION = "audit_retention"
    AUDIT_INDEX_REBUILT = "audit_index_rebuilt"
    AUDIT_CHECKPOINTS_REPAIRED = "audit_checkpoints_repaired"
    DECISIONS_REPLAYED = "decisions_replayed"
    # Discovery and trust
    DEVICE_DISCOVERED = "device_discovered"
    DEVICE_ADOPTED = "device_adopted"
    DISCOVERY_IGNORED = "discovery_ignored"
    DISCOVERY_UNIGNORED = "discovery_unignored"
    DEVICE_ADDRESS_CHANGED = "device_address_changed"
    DEVICE_IDENTITY_CONFLICT = "device_identity_conflict"
    DEVICE_PINNED = "device_pinned"
    DEVICE_IDENTITY_MISMATCH = "device_identity_mismatch"
    DEVICE_ADOPT_WAITING = "device_adopt_waiting"
    DEVICE_KEY_INSTALLED = "device_key_installed"
    # Device link
    DEVICE_ONLINE = "device_online"
    DEVICE_DEGRADED = "device_degraded"
    DEVICE_OFFLINE = "device_offline"
    # What devices report
    DOOR_OPENED = "door_opened"
    DOOR_CLOSED = "door_closed"
    ITEM_REMOVED = "item_removed"
    ITEM_RETURNED = "item_returned"
    ALARM_RAISED = "alarm_raised"
    ALARM_CLEARED = "alarm_cleared"
    ALARM_ACKNOWLEDGED = "alarm_acknowledged"
    # Buses
    BUS_LENT = "bus_lent"
    BUS_RETURNED = "bus_returned"
    # Commands and decisions
    UNLOCK_REQUESTED = "unlock_requested"
    UNLOCK = "unlock"
    IDENTIFY = "identify"
    OUT_OF_SERVICE = "out_of_service"
    BACK_IN_SERVICE = "back_in_service"
    OUT_OF_SERVICE_PUSH = "out_of_service_push"
    # People
    ENTITLEMENTS_LOADED = "entitlements_loaded"
    ENTITLEMENTS_REFUSED = "entitlements_refused"
    # Custody (card readers, stations)
    ISSUE_REFUSED = "issue_refused"
    ISSUE_WAITING = "issue_waiting"
    SECOND_PERSON = "second_person"
    ISSUE_GRANTED = "issue_granted"
    ISSUE_ABANDONED = "issue_abandoned"
    CUSTODY_OPENED = "custody_opened"
    RETURN_GRANTED = "return_granted"
    CUSTODY_CLOSED = "custody_closed"
    UNAUTHORISED_REMOVAL = "unauthorised_removal"
    CUSTODY_OVERDUE = "custody_overdue"
    BREAK_GLASS = "break_glass"
    HQ_COMMAND = "hq_command"
    # Access
    ACCESS_REFUSED = "access_refused"


DESCRIPTIONS: dict[Action, str] = {
    Action.AGENT_STARTED: "the agent started (version, site, pid, plugins)",
    Action.AGENT_STOPPED: "the agent stopped cleanly",
    Action.AUDIT_RECOVERED: "a write torn by a crash was cut off the log (segment, offset, bytes)",
    Action.AUDIT_LOG_RECOVERED: "the log takes writes again after a full disk or I/O error; "
                                "observations kept in memory follow",
    Action.AUDIT_RETENTION: "whole segments older than the window were removed (sealed first)",
    Action.AUDIT_INDEX_REBUILT: "an index did not match its segment and was rebuilt",
    Action.AUDIT_CHECKPOINTS_REPAIRED: "torn checkpoint lines were set aside after a crash",
    Action.DECISIONS_REPLAYED: "decisions the registry had not taken were replayed from the log",
    Action.DEVICE_DISCOVERED: "a device was found (plugin, source, address, model)",
    Action.DEVICE_ADOPTED: "a technician adopted a device and pinned what it presented "
                           "(actor, reason, pins: serial, key fingerprint, bus address; "
                           "replaces, first: a re-adoption)",
    Action.DISCOVERY_IGNORED: "a technician ignored a device or inbox entry (actor, reason)",
    Action.DISCOVERY_UNIGNORED: "a technician took an ignore back: the device or entry is in "
                                "the inbox again, not adopted (actor, reason)",
    Action.DEVICE_ADDRESS_CHANGED: "a device proved its identity at a new address and moved",
    Action.DEVICE_IDENTITY_CONFLICT: "another address claimed a device that still answers; "
                                     "refused",
    Action.DEVICE_PINNED: "an auto-adopted device was pinned on first contact (serial, "
                          "key fingerprint)",
    Action.DEVICE_IDENTITY_MISMATCH: "a pinned device answered as another (serial, "
                                     "certificate): blocked, no commands until re-adopted",
    Action.DEVICE_ADOPT_WAITING: "re-adopting an armoury device waits for a second person",
    Action.DEVICE_KEY_INSTALLED: "a driver installed a new key on a device (an OSDP reader's "
                                 "first pairing in install mode): what was done",
    Action.DEVICE_ONLINE: "a device answers",
    Action.DEVICE_DEGRADED: "a device misses polls",
    Action.DEVICE_OFFLINE: "a device stopped answering",
    Action.DOOR_OPENED: "a compartment door opened (actor: the device)",
    Action.DOOR_CLOSED: "a compartment door closed",
    Action.ITEM_REMOVED: "an item left its compartment (item: its tag, if known)",
    Action.ITEM_RETURNED: "an item came back",
    Action.ALARM_RAISED: "a device raised an alarm (code, severity, message)",
    Action.ALARM_CLEARED: "a device alarm cleared (how long it lasted)",
    Action.ALARM_ACKNOWLEDGED: "a technician acknowledged an alarm (who, why, its code and "
                               "message): it stays raised until its cause clears",
    Action.BUS_LENT: "a technician borrowed a bus for a scan: the agent closed its port (who, "
                     "why, for how long at most)",
    Action.BUS_RETURNED: "a lent bus came back to the agent (given back, or the loan ran out)",
    Action.UNLOCK_REQUESTED: "an unlock was asked for, durable before the board is told",
    Action.UNLOCK: "what the board did: outcome ok, failed or unknown (request_seq)",
    Action.IDENTIFY: "a device was asked to flash or beep",
    Action.OUT_OF_SERVICE: "a compartment was taken out of service (unlocks refused)",
    Action.BACK_IN_SERVICE: "a compartment was put back in service",
    Action.OUT_OF_SERVICE_PUSH: "telling the device itself of an out-of-service failed",
    Action.ENTITLEMENTS_LOADED: "a signed training-records snapshot came into force (id, "
                                "key, officers, expiry)",
    Action.ENTITLEMENTS_REFUSED: "a snapshot was refused (why: signature, key, dates)",
    Action.ISSUE_REFUSED: "a card at a station was refused (officer if known, station, why: "
                          "unknown card, no or expired qualification, limit, stale "
                          "entitlements, nothing available, second person not valid)",
    Action.ISSUE_WAITING: "a two-person issue waits for a second authorised person",
    Action.SECOND_PERSON: "the second person of a two-person issue badged (officer, role)",
    Action.ISSUE_GRANTED: "a compartment is opened for an officer to take an item (class, "
                          "due time)",
    Action.ISSUE_ABANDONED: "the door closed (or timed out) with the item still there",
    Action.CUSTODY_OPENED: "an officer holds an item: it left the compartment opened for "
                           "them (due time)",
    Action.RETURN_GRANTED: "a compartment is opened for an officer to return an item",
    Action.CUSTODY_CLOSED: "an item came back (by the holder or someone else; late or not)",
    Action.UNAUTHORISED_REMOVAL: "an item left a station's compartment with no issue open "
                                 "for it",
    Action.CUSTODY_OVERDUE: "an item is past its due time (warning, then critical)",
    Action.HQ_COMMAND: "a signed command from headquarters: armoury lockdown or release "
                       "(outcome applied, or refused with why)",
    Action.BREAK_GLASS: "two armourers switched stale-entitlement refusals off for a time "
                        "(outcome on), or that time ended (outcome off)",
    Action.ACCESS_REFUSED: "a call on the control socket was refused: the caller lacks a "
                           "role (caller, call, missing role)",
}
