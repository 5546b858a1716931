"""The audit log's hash chain: how a record's hash is made, and how a chain is checked.

    hash = sha256_hex(prev_hash + canonical_json({"seq", "kind", "actor", "at", "payload"}))

with canonical JSON = sorted keys, no whitespace, ASCII only, `at` as UTC ISO 8601. The first
record has seq 1 and prev_hash GENESIS_HASH. Pure functions, shared by the stores (which chain on
append) and `taskpass audit verify` (which checks an export or the live table).

A chain checked on its own cannot reveal that its newest records were cut off, nor that someone
with write access re-hashed everything after an edit: `check_head` compares it with a head
recorded elsewhere (`HeadLog` logs one a minute) for that.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from taskpass.server.store.records import AuditRecord, JsonObject, utc

GENESIS_HASH = "0" * 64

log = logging.getLogger("taskpass.audit")


# One encoder reused: `json.dumps` with non-default options builds a new one on every call
# (about 1 us, and this runs for every audit record and task row).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


def canonical_json(value: object) -> str:
    return _CANONICAL.encode(value)


def chain_hash(
    *, prev_hash: str, seq: int, kind: str, actor: str, at: dt.datetime, payload: JsonObject
) -> str:
    document = canonical_json(
        {
            "seq": seq,
            "kind": kind,
            "actor": actor,
            "at": utc(at, "at").isoformat(),
            "payload": payload,
        }
    )
    return hashlib.sha256((prev_hash + document).encode("utf-8")).hexdigest()


def record_hash(record: AuditRecord) -> str:
    """The hash `record` should carry, recomputed from its content and its prev_hash."""
    return chain_hash(
        prev_hash=record.prev_hash,
        seq=record.seq,
        kind=record.kind,
        actor=record.actor,
        at=record.at,
        payload=record.payload,
    )


class ChainProblem(enum.Enum):
    CUT_OFF = "cut_off"
    """The log ends before a head seen earlier: records were cut off its end."""
    HEAD_MISMATCH = "head_mismatch"
    """The record at a head seen earlier has another hash now: the log was rewritten."""
    SEQ_GAP = "seq_gap"
    """A seq is missing here: a record was deleted (or moved further down)."""
    SEQ_ORDER = "seq_order"
    """A seq repeats or goes backwards: records were reordered or duplicated."""
    BROKEN_LINK = "broken_link"
    """prev_hash is not the previous record's hash: a record was inserted, removed or moved."""
    HASH_MISMATCH = "hash_mismatch"
    """The content does not match its own hash: the record was edited."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyResult:
    ok: bool
    checked: int
    """How many records were checked before the first problem (all of them when ok)."""
    last_seq: int
    """Seq of the last good record (the starting seq when there was none)."""
    last_hash: str
    """Hash of the last good record: pass it with last_seq to continue with the next page."""
    problem: ChainProblem | None = None
    seq: int | None = None
    """Seq of the first bad record."""
    message: str = ""


def verify_chain(
    records: Iterable[AuditRecord], *, after_seq: int = 0, after_hash: str = GENESIS_HASH
) -> VerifyResult:
    """Check `records` (in the order given) continue the chain that ends at after_seq/after_hash.

    Stops at the first bad record and says what is wrong with it.
    """
    last_seq, last_hash, checked = after_seq, after_hash, 0

    def fail(problem: ChainProblem, seq: int, message: str) -> VerifyResult:
        return VerifyResult(
            ok=False,
            checked=checked,
            last_seq=last_seq,
            last_hash=last_hash,
            problem=problem,
            seq=seq,
            message=message,
        )

    for record in records:
        if record.seq <= last_seq:
            return fail(
                ChainProblem.SEQ_ORDER,
                record.seq,
                f"audit record {record.seq} comes after record {last_seq}: "
                "records were reordered or duplicated",
            )
        if record.seq != last_seq + 1:
            missing = f"{last_seq + 1}" + (
                f"..{record.seq - 1}" if record.seq - 1 > last_seq + 1 else ""
            )
            return fail(
                ChainProblem.SEQ_GAP,
                record.seq,
                f"audit record(s) {missing} missing before record {record.seq}: "
                "records were deleted (or moved further down)",
            )
        if record.prev_hash != last_hash:
            return fail(
                ChainProblem.BROKEN_LINK,
                record.seq,
                f"audit record {record.seq} does not chain to the record before it "
                "(prev_hash differs): a record was inserted, removed or moved here, "
                "or the previous record was edited and re-hashed",
            )
        if record_hash(record) != record.hash:
            return fail(
                ChainProblem.HASH_MISMATCH,
                record.seq,
                f"audit record {record.seq} does not match its hash: its content was edited",
            )
        last_seq, last_hash, checked = record.seq, record.hash, checked + 1
    return VerifyResult(ok=True, checked=checked, last_seq=last_seq, last_hash=last_hash)


@dataclass(frozen=True, slots=True)
class Head:
    """The last record of the chain at some moment: its seq and hash. A hash chain proves
    nothing against someone who can rewrite the whole table; a head kept outside the database
    (the server logs one a minute, `audit verify` prints it) does: a later verification with
    `expect` finds the log rewritten or cut off at or before it."""

    seq: int
    hash: str


def check_head(result: VerifyResult, expected: Head, hash_at_seq: str | None) -> VerifyResult:
    """`result` (a whole-log verification that passed) against a head seen earlier, where
    `hash_at_seq` is the hash the log now holds at `expected.seq` (None: no such record)."""
    if hash_at_seq is None:
        problem, message = (
            ChainProblem.CUT_OFF,
            f"the audit log ends at record {result.last_seq}, before record {expected.seq} "
            "seen earlier: records were cut off its end",
        )
    elif hash_at_seq != expected.hash:
        problem, message = (
            ChainProblem.HEAD_MISMATCH,
            f"audit record {expected.seq} has another hash than when it was seen earlier: the "
            "log was rewritten at or before it (and re-hashed to hide it)",
        )
    else:
        return result
    return dataclasses.replace(result, ok=False, problem=problem, seq=expected.seq, message=message)


HEAD_LOG_SECONDS = 60.0


class HeadLog:
    """Logs the chain's head at most once a HEAD_LOG_SECONDS, when it moved: shipped with the
    logs, it is the anchor outside the database that `audit verify --expect` checks against."""

    def __init__(self, *, every: float = HEAD_LOG_SECONDS) -> None:
        self._every = every
        self._logged_at = -math.inf
        self._logged_seq = 0

    def committed(self, seq: int, digest: str) -> None:
        now = time.monotonic()
        if seq != self._logged_seq and now - self._logged_at >= self._every:
            self._logged_at, self._logged_seq = now, seq
            log.info(
                "audit head %d:%s", seq, digest, extra={"audit_seq": seq, "audit_hash": digest}
            )
