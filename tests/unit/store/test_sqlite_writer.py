"""The writer's hot-path audit hash is the audit chain's hash, for any record."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from taskpass.server.store.audit_chain import GENESIS_HASH, canonical_json, chain_hash
from taskpass.server.store.sqlite_writer import chain_hash_of_json

_json: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
_aware = st.datetimes(
    timezones=st.sampled_from(
        [
            dt.UTC,
            dt.timezone(dt.timedelta(hours=5, minutes=30)),
            dt.timezone(-dt.timedelta(hours=8)),
        ]
    )
)


@given(
    prev=st.sampled_from([GENESIS_HASH, "ab" * 32]),
    seq=st.integers(min_value=1, max_value=2**62),
    kind=st.text(),
    actor=st.text(),
    at=_aware,
    payload=st.dictionaries(st.text(), _json, max_size=6),
)
def test_hash_from_payload_json_equals_the_chain_hash(
    prev: str, seq: int, kind: str, actor: str, at: dt.datetime, payload: dict[str, Any]
) -> None:
    expected = chain_hash(prev_hash=prev, seq=seq, kind=kind, actor=actor, at=at, payload=payload)

    got = chain_hash_of_json(
        prev_hash=prev,
        seq=seq,
        kind=kind,
        actor=actor,
        at=at,
        payload_json=canonical_json(payload),
    )

    assert got == expected
