"""The watcher's reconnect backoff, and what it applies from a scripted stream: events it cannot
verify yet, a server whose log restarted, timestamps no datetime can hold."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from taskpass._proto.v1 import revocation_pb2 as pb
from taskpass.client.jwks import JwksCache
from taskpass.client.security_events import SESSION_REVOKED, RejectReason
from taskpass.client.watcher import Backoff, Revocation, RevocationWatcher
from taskpass.server.clock import FixedClock
from taskpass.server.issuer.jws import header_segment, json_segment, sign_compact, sign_segments
from taskpass.server.issuer.keys import SigningKey
from tests.support.pki import NOW
from tests.unit.client.conftest import CountingJwks, FakeChannel
from tests.unit.client.factories import AGENT, ISSUER, jwks, signing_key

MS = dt.timedelta(milliseconds=1)
COOLDOWN = dt.timedelta(seconds=30)  # the key cache's default refetch cooldown


@pytest.mark.parametrize(
    ("failures", "ceiling"),
    [
        pytest.param(1, 0.1, id="first"),
        pytest.param(2, 0.2, id="doubles"),
        pytest.param(4, 0.8, id="doubles-again"),
        pytest.param(40, 5.0, id="capped"),
    ],
)
def test_the_wait_doubles_up_to_the_maximum_with_jitter_below_it(
    failures: int, ceiling: float
) -> None:
    backoff = Backoff(initial=100 * MS, maximum=5000 * MS)
    waits = [backoff.delay(failures) for _ in range(50)]
    assert all(ceiling / 2 <= w <= ceiling for w in waits)
    assert len(set(waits)) > 1  # jittered


@pytest.mark.parametrize(
    ("initial", "maximum"),
    [pytest.param(0 * MS, MS, id="zero-initial"), pytest.param(2 * MS, MS, id="max-below-initial")],
)
def test_a_backoff_that_makes_no_sense_is_refused(
    initial: dt.timedelta, maximum: dt.timedelta
) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(initial=initial, maximum=maximum)


# --- the stream, scripted ----------------------------------------------------------------------

Step = pb.WatchResponse | Callable[[], None]
"""What a scripted stream sends next, or something that changes the world when it gets there."""


class ServerDone(Exception):
    """Every script was served: ends the test's watcher."""


class _Call:
    def __init__(self, script: list[Step]) -> None:
        self._script = script

    def __aiter__(self) -> AsyncIterator[pb.WatchResponse]:
        return self._responses()

    async def _responses(self) -> AsyncIterator[pb.WatchResponse]:
        for step in self._script:
            if isinstance(step, pb.WatchResponse):
                yield step
            else:
                step()

    def cancel(self) -> None:
        pass


class FakeRevocationServer:
    """Answers each Watch call with the next script, then ends (a stream that closes without an
    EndOfStream is reconnected after a backoff), and records each call's `since`."""

    def __init__(self, *scripts: list[Step]) -> None:
        self._scripts = list(scripts)
        self.since: list[int | None] = []

    def watch(self, request: pb.WatchRequest) -> _Call:
        self.since.append(request.since if request.HasField("since") else None)
        if not self._scripts:
            raise ServerDone
        return _Call(self._scripts.pop(0))

    def watcher(self, keys: JwksCache, clock: FixedClock, since: int | None) -> RevocationWatcher:
        channel = FakeChannel({"/taskpass.v1.RevocationService/Watch": self.watch})
        return RevocationWatcher(
            channel.client(),
            since=since,
            issuer=ISSUER,
            keys=keys,
            clock=clock,
            backoff=Backoff(initial=MS, maximum=MS),
        )


async def follow(watcher: RevocationWatcher) -> list[Revocation]:
    """What the watcher yields until the server has served every script."""
    got: list[Revocation] = []
    with pytest.raises(ServerDone):
        async for revocation in watcher:
            got.append(revocation)
    return got


def _set_claims(seq: int, jti: str, at: int) -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "jti": f"set-{seq}-{jti}",
        "iat": int(NOW.timestamp()),
        "txn": "task-42",
        "sub_id": {"format": "jwt_id", "iss": ISSUER, "jti": jti},
        "events": {SESSION_REVOKED: {"event_timestamp": at, "initiating_entity": "admin"}},
    }


def revoked(
    key: SigningKey,
    seq: int,
    jti: str,
    *,
    token: str | None = None,
    event_timestamp: int | None = None,
    expires_at: Timestamp | None = None,
) -> pb.RevocationEvent:
    """A credential revocation as the server streams it, its SET signed by `key`."""
    at = int(NOW.timestamp()) if event_timestamp is None else event_timestamp
    if expires_at is None:
        expires_at = Timestamp()
        expires_at.FromDatetime(NOW + dt.timedelta(minutes=10))
    revoked_at = Timestamp()
    revoked_at.FromDatetime(NOW)
    return pb.RevocationEvent(
        seq=seq,
        kind=pb.REVOCATION_KIND_CREDENTIAL,
        subject=AGENT,
        task_id="task-42",
        jti=jti,
        expires_at=expires_at,
        revoked_at=revoked_at,
        security_event_token=token
        or sign_compact(key, typ="secevent+jwt", claims=_set_claims(seq, jti, at)),
    )


def event(revocation: pb.RevocationEvent) -> pb.WatchResponse:
    return pb.WatchResponse(event=revocation)


def heartbeat(seq: int) -> pb.WatchResponse:
    return pb.WatchResponse(heartbeat=pb.Heartbeat(seq=seq))


def snapshot(seq: int, *events: pb.RevocationEvent, complete: bool = True) -> pb.WatchResponse:
    return pb.WatchResponse(snapshot=pb.Snapshot(events=events, seq=seq, complete=complete))


def end(seq: int) -> pb.WatchResponse:
    return pb.WatchResponse(end=pb.EndOfStream(resume_after=seq, reason="restarting"))


async def test_a_set_signed_by_a_rotated_key_is_retried_until_the_jwks_can_be_refetched(
    clock: FixedClock, key: SigningKey
) -> None:
    rotated = signing_key()
    source = CountingJwks(jwks(key))
    keys = JwksCache(source, algorithms=("ES256",), clock=clock, refetch_cooldown=COOLDOWN)

    def rotate_during_an_outage() -> None:
        source.document = jwks(key, rotated)
        source.fail = True

    def recover() -> None:
        source.fail = False

    def after_the_cooldown() -> None:
        clock.advance(COOLDOWN)

    after_rotation = event(revoked(rotated, 2, "after-rotation"))
    server = FakeRevocationServer(
        [event(revoked(key, 1, "before-rotation")), rotate_during_an_outage, after_rotation],
        [recover, after_rotation],  # the JWKS is back, but the last refetch was just now
        [after_the_cooldown, after_rotation, heartbeat(2)],
    )
    watcher = server.watcher(keys, clock, since=0)

    got = await follow(watcher)

    assert [r.jti for r in got] == ["before-rotation", "after-rotation"]
    assert server.since == [0, 1, 1, 2]  # not past seq 2 until it was verified
    assert watcher.is_revoked("after-rotation")
    assert watcher.rejected == 0


def _signed_by_a_key_never_published(key: SigningKey) -> str:
    return sign_compact(signing_key(), typ="secevent+jwt", claims=_set_claims(2, "evil", 0))


def _forged_under_our_kid(key: SigningKey) -> str:
    header = header_segment("ES256", key.kid, "secevent+jwt")
    return sign_segments(signing_key(), header, json_segment(_set_claims(2, "evil", 0)))


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        pytest.param(_signed_by_a_key_never_published, RejectReason.UNKNOWN_KEY, id="unknown-kid"),
        pytest.param(_forged_under_our_kid, RejectReason.BAD_SIGNATURE, id="bad-signature"),
    ],
)
async def test_a_set_the_fetched_keys_refute_is_rejected_and_the_stream_goes_on(
    clock: FixedClock,
    key: SigningKey,
    token: Callable[[SigningKey], str],
    reason: RejectReason,
) -> None:
    keys = JwksCache(CountingJwks(jwks(key)), algorithms=("ES256",), clock=clock)
    server = FakeRevocationServer(
        [
            event(revoked(key, 1, "good-1")),
            event(revoked(key, 2, "evil", token=token(key))),
            event(revoked(key, 3, "good-3")),
            heartbeat(3),
        ]
    )
    watcher = server.watcher(keys, clock, since=0)

    got = await follow(watcher)

    assert [r.seq for r in got] == [1, 3]
    assert watcher.rejected == 1
    assert watcher.last_rejection is not None
    assert watcher.last_rejection.reason is reason
    assert not watcher.is_revoked("evil")
    assert server.since == [0, 3]


async def test_after_the_server_log_restarts_below_the_cursor_its_new_events_are_applied(
    clock: FixedClock, key: SigningKey
) -> None:
    # The server answers a cursor beyond its log (a restored backup, another database) with a
    # snapshot: what follows reuses seqs the watcher saw before, for other events.
    keys = JwksCache(CountingJwks(jwks(key)), algorithms=("ES256",), clock=clock)
    first, second = revoked(key, 1, "first"), revoked(key, 2, "second")
    server = FakeRevocationServer(
        [event(first), event(second), heartbeat(2), end(2)],
        [snapshot(1, first), event(revoked(key, 2, "after-restart")), heartbeat(2)],
    )
    watcher = server.watcher(keys, clock, since=0)

    got = await follow(watcher)

    assert [(r.seq, r.jti) for r in got] == [(1, "first"), (2, "second"), (2, "after-restart")]
    assert watcher.is_revoked("after-restart")
    assert watcher.duplicates == 1  # the first event, in the snapshot


async def test_a_snapshot_sent_again_after_a_disconnect_yields_each_event_once(
    clock: FixedClock, key: SigningKey
) -> None:
    keys = JwksCache(CountingJwks(jwks(key)), algorithms=("ES256",), clock=clock)
    first, second = revoked(key, 1, "first"), revoked(key, 2, "second")
    server = FakeRevocationServer(
        [snapshot(2, first, complete=False)],  # cut off before the last chunk
        [snapshot(2, first, complete=False), snapshot(2, second), heartbeat(2)],
    )
    watcher = server.watcher(keys, clock, since=None)

    got = await follow(watcher)

    assert [r.seq for r in got] == [1, 2]
    assert watcher.duplicates == 1
    assert server.since == [None, None, 2]


def _far_future() -> Timestamp:
    return Timestamp(seconds=10**15)  # beyond year 9999: ToDatetime refuses it


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"event_timestamp": 10**12}, id="signed-event-timestamp"),
        pytest.param({"event_timestamp": -(10**13)}, id="signed-event-timestamp-before-year-1"),
        pytest.param({"expires_at": _far_future()}, id="streamed-expiry"),
    ],
)
async def test_an_event_time_no_datetime_can_hold_is_rejected_and_the_stream_goes_on(
    clock: FixedClock, key: SigningKey, changes: dict[str, Any]
) -> None:
    keys = JwksCache(CountingJwks(jwks(key)), algorithms=("ES256",), clock=clock)
    server = FakeRevocationServer(
        [
            event(revoked(key, 1, "odd", **changes)),
            event(revoked(key, 2, "good")),
            heartbeat(2),
        ]
    )
    watcher = server.watcher(keys, clock, since=0)

    got = await follow(watcher)

    assert [r.seq for r in got] == [2]
    assert watcher.rejected == 1
    assert watcher.last_rejection is not None
    assert watcher.last_rejection.reason is RejectReason.MALFORMED
