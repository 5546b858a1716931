"""What a NOTIFY payload says: the writer encodes the topics a batch changed, replicas decode them.

    events:<seq> approval:<id> approval:<id> keys

`events:<seq>` is the newest event seq of the batch, `approval:<id>` an approval created, decided
or used, `keys` a signing key published. A notification only says what to re-read: the tables
stay the one source of truth. A payload this code does not understand (another version's)
decodes as "everything may have changed", which costs a re-read, never a missed change.
PostgreSQL refuses payloads of 8000 bytes or more, so a batch's topics are split over several
notifications when needed.

The channel itself is configurable (`[store] notify_channel`): channels are database-wide, so
two deployments sharing one database in different schemas need one each, or every commit of
one wakes the other's replicas (a spurious re-read each, never a wrong answer).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from taskpass.server.store.base import StoreChange

EVENTS_PREFIX = "events:"
APPROVAL_PREFIX = "approval:"
KEYS_TOPIC = "keys"
MAX_PAYLOAD_BYTES = 7000

EVENTS_CHANNEL = "taskpass_events"
"""The default NOTIFY channel: the payload says what changed; listeners re-read. Channels are
database-wide: deployments sharing a database in different schemas should each use their own
(they would only cost each other spurious re-reads)."""

CHANNEL_RULE = (
    "1 to 63 characters, lower-case letters a-z, digits and underscores, "
    "starting with a letter or an underscore"
)
"""What a channel name may be: a plain PostgreSQL identifier (63 bytes is PostgreSQL's limit),
lower case so that it is the same name whether an operator's `LISTEN` quotes it or not."""
_CHANNEL = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_channel(name: str) -> str:
    """`name` when it is a valid channel name (see CHANNEL_RULE), else ValueError."""
    if not _CHANNEL.fullmatch(name):
        raise ValueError(f"{name!r} is not a usable NOTIFY channel name: use {CHANNEL_RULE}")
    return name


def approval_topic(approval_id: str) -> str:
    return APPROVAL_PREFIX + approval_id


def encode(*, event_seq: int | None, topics: Iterable[str]) -> list[str]:
    """The payloads announcing a batch: events appended up to `event_seq` (None: no events)
    and `topics`; empty when there is nothing to announce."""
    tokens = [] if event_seq is None else [f"{EVENTS_PREFIX}{event_seq}"]
    tokens += sorted(set(topics))
    payloads: list[str] = []
    current: list[str] = []
    size = 0
    for token in tokens:
        length = len(token.encode()) + 1
        if current and size + length > MAX_PAYLOAD_BYTES:
            payloads.append(" ".join(current))
            current, size = [], 0
        current.append(token)
        size += length
    if current:
        payloads.append(" ".join(current))
    return payloads


def decode(payload: str) -> StoreChange:
    events = keys = False
    approvals: set[str] = set()
    for token in payload.split():
        if token.startswith(EVENTS_PREFIX) and token[len(EVENTS_PREFIX) :].isdigit():
            events = True
        elif token.startswith(APPROVAL_PREFIX) and len(token) > len(APPROVAL_PREFIX):
            approvals.add(token[len(APPROVAL_PREFIX) :])
        elif token == KEYS_TOPIC:
            keys = True
        else:
            return StoreChange(everything=True)
    if not (events or keys or approvals):
        return StoreChange(everything=True)
    return StoreChange(events=events, approvals=frozenset(approvals), keys=keys)
