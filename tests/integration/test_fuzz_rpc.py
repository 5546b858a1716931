"""Property-based fuzzing of every RPC over the real server (hypothesis; see fuzzing.py):
random field values and sizes, random bytes as the serialized message, random metadata.

The property for every input: the status is never INTERNAL or UNKNOWN (the server refused or
served, it did not fail), the server keeps serving, and the store holds no partial records.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
from hypothesis import given
from hypothesis import strategies as st

from tests.integration.fuzzing import (
    METHODS,
    Method,
    assert_still_serving,
    call,
    fuzz_settings,
    messages,
    mtls_channel,
    tls_channel,
)
from tests.integration.harness import Harness

Codes = Counter[tuple[str, str]]


def channels_by_caller(harness: Harness) -> dict[str, grpc.Channel]:
    return {caller: mtls_channel(harness, caller) for caller in {m.caller for m in METHODS}}


async def test_every_rpc_answers_random_messages_without_failing(harness: Harness) -> None:
    channels = channels_by_caller(harness)
    codes: Codes = Counter()

    @fuzz_settings(300)
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        method: Method = data.draw(st.sampled_from(METHODS))
        request = data.draw(messages(method.request), label="request")
        code = call(channels[method.caller], method, request.SerializeToString())
        codes[(method.path, code.name)] += 1

    try:
        await asyncio.to_thread(fuzz)
    finally:
        for channel in channels.values():
            channel.close()
    assert len({path for path, _ in codes}) == len(METHODS)  # every RPC was reached
    await assert_still_serving(harness)


async def test_random_bytes_as_any_request_are_refused_cleanly(harness: Harness) -> None:
    """Oversized messages are not drawn here (grpcio takes ~100 ms to refuse each): see
    test_reliability_limits.py."""
    channels = channels_by_caller(harness)
    codes: Codes = Counter()

    @fuzz_settings(300)
    @given(
        method=st.sampled_from(METHODS),
        payload=st.one_of(
            st.binary(max_size=64),
            st.binary(min_size=64, max_size=4000),
        ),
    )
    def fuzz(method: Method, payload: bytes) -> None:
        code = call(channels[method.caller], method, payload)
        codes[(method.path, code.name)] += 1

    try:
        await asyncio.to_thread(fuzz)
    finally:
        for channel in channels.values():
            channel.close()
    assert "INVALID_ARGUMENT" in {code for _, code in codes}  # unparseable, named as such
    await assert_still_serving(harness)


_NAMES = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,24}", fullmatch=True).filter(
    lambda k: (
        not k.startswith("grpc-")
        and k not in {"te", "content-type", "user-agent", "host"}
        and not k.endswith("-bin")
    )
)
_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)
_METADATA = st.lists(
    st.one_of(
        st.tuples(_NAMES, _VALUES),
        st.tuples(_NAMES.map(lambda k: k + "-bin"), st.binary(max_size=300)),
        st.tuples(st.just("authorization"), _VALUES),
        st.tuples(st.just("authorization"), _VALUES.map(lambda v: "Bearer " + v)),
        st.tuples(st.just("x-request-id"), _VALUES),
    ),
    max_size=6,
)


async def test_random_metadata_and_authorization_on_both_listeners(harness: Harness) -> None:
    channels = channels_by_caller(harness)
    bearer_listener = tls_channel(harness)
    codes: Codes = Counter()

    @fuzz_settings(300)
    @given(
        method=st.sampled_from(METHODS),
        metadata=_METADATA,
        over_tls=st.booleans(),
    )
    def fuzz(method: Method, metadata: list[tuple[str, str | bytes]], over_tls: bool) -> None:
        channel = bearer_listener if over_tls else channels[method.caller]
        code = call(channel, method, b"", metadata=metadata)
        codes[(method.path, code.name)] += 1

    try:
        await asyncio.to_thread(fuzz)
    finally:
        bearer_listener.close()
        for channel in channels.values():
            channel.close()
    assert "UNAUTHENTICATED" in {code for _, code in codes}  # random bearers, refused
    await assert_still_serving(harness)
