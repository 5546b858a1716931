"""The id of the request being served, shared by its log lines and its audit records.

A caller may send `x-request-id` (to join its own traces); a well-formed one is kept, anything
else is replaced by a fresh id, so a hostile value never reaches a log line or the audit log.
The id lives in a contextvar for the duration of one RPC (set by api/observability.py), which
is how code far from the transport (audit entries, log records) finds it without gRPC.
"""

from __future__ import annotations

import contextvars
import re
import secrets

METADATA_KEY = "x-request-id"
AUDIT_KEY = "request_id"

_WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=-]{0,127}")
"""UUIDs, W3C trace ids, hex and base64url ids fit; no spaces, quotes or control characters."""

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "taskpass_request_id", default=None
)


def new_request_id() -> str:
    """96 random bits as hex: unique enough to find one call in a day of logs."""
    return secrets.token_hex(12)


def accept_request_id(offered: str | bytes | None) -> str:
    """The caller's id if it is well-formed (at most 128 characters of [A-Za-z0-9._:/+=-]),
    else a new one."""
    if isinstance(offered, bytes):
        offered = offered.decode("ascii", "replace")
    if offered is not None and _WELL_FORMED.fullmatch(offered):
        return offered
    return new_request_id()


def current_request_id() -> str | None:
    """The id of the RPC being served, None outside one."""
    return _current.get()


def bind_request_id(request_id: str) -> None:
    """Make `request_id` current for the rest of this task. gRPC runs every RPC in its own
    asyncio task (its own context copy), so one call's id never leaks into another's."""
    _current.set(request_id)
