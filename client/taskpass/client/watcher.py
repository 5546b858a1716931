"""The revocation watcher: a sidecar's live, verified copy of what is revoked.

    async with TaskpassClient.from_files("localhost:8443", ca=..., cert=..., key=...) as client:
        watcher = RevocationWatcher(client, issuer="https://taskpass.example.org")
        async for revocation in watcher:       # reconnects and resumes by itself
            print(revocation.as_json())

    # meanwhile, for every request (synchronous, a few dict lookups):
    if watcher.is_token_revoked(verified_claims): reject()

- It resumes from its cursor (the last seq it processed) after any disconnect, with exponential
  backoff and jitter; an EndOfStream from the server (it fell behind, or the server is stopping)
  reconnects at once. Without a starting cursor the server sends a snapshot first.
- DATA_LOSS (the server cannot read a row of its database: StoreCorrupted) is reconnected after
  too, with the same backoff, logged at WARNING with the server's message each time: only the
  server's operator can fix it, and a watcher that raised would leave a sidecar's revocations
  silently frozen; this one resumes on its own once the row is restored.
- Each event is yielded once: live events at or below the cursor, and snapshot events whose SET
  was already received under the same seq, are dropped (`duplicates` counts them). Dedupe is by
  SET, not by seq alone: a server whose log restarted below the cursor (a restored backup)
  answers with a snapshot, and its next events reuse seqs the watcher saw for other events.
- Each SET is verified (see security_events.py) with keys from the server's JWKS; a forged SET,
  one whose fields disagree with the stream's, one replayed under another seq, or one with a
  time no datetime can hold is not applied (`rejected` counts them, `last_rejection` says why).
  Events already expired are skipped.
- A SET signed with a kid the keys held lack (a key just rotated in) is rejected only once keys
  fetched for it lack it too. While the JWKS cannot be refetched (the fetch fails, or the last
  refetch is within the key cache's cooldown), the watcher does not move its cursor past the
  event: it reconnects with backoff, as for an unreachable server, and the event is sent again.
- What is revoked is kept until it expires, then pruned: credentials by jti, tasks by
  (requester, task id), identities by ID or pattern with the time of the ban. Task and identity
  revocations name the task or identity, not each jti, so check a token with its claims
  (`is_token_revoked`, or `is_revoked` with `subject`, `task_id`, `issued_at`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import grpc

from taskpass._proto.v1 import revocation_pb2 as pb
from taskpass._proto.v1 import revocation_pb2_grpc as pb_grpc
from taskpass.client.client import TaskpassClient
from taskpass.client.clock import Clock, SystemClock
from taskpass.client.errors import Unavailable, from_rpc_error
from taskpass.client.jwks import GrpcJwks, JwksCache
from taskpass.client.security_events import (
    ALGORITHMS,
    RejectedEvent,
    RejectReason,
    RevocationKind,
    SecurityEventVerifier,
    SignedRevocation,
    pattern_matches,
)
from taskpass.client.timestamps import from_timestamp

WATCHER_LOGGER = "taskpass.client.watcher"
log = logging.getLogger(WATCHER_LOGGER)

# Statuses after which reconnecting can help; any other is a configuration problem to report.
RETRYABLE: Final = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,  # not by itself: once the operator restores the row
    }
)

_KINDS: Final = {
    pb.REVOCATION_KIND_CREDENTIAL: RevocationKind.CREDENTIAL,
    pb.REVOCATION_KIND_TASK: RevocationKind.TASK,
    pb.REVOCATION_KIND_IDENTITY: RevocationKind.IDENTITY,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    initial: dt.timedelta = dt.timedelta(milliseconds=100)
    """The wait after the first failed attempt; it doubles after each further one."""
    maximum: dt.timedelta = dt.timedelta(seconds=5)
    """The longest wait between attempts."""

    def __post_init__(self) -> None:
        if self.initial <= dt.timedelta(0) or self.maximum < self.initial:
            raise ValueError("backoff needs 0 < initial <= maximum")

    def delay(self, failures: int) -> float:
        """Seconds before the next attempt, jittered so that sidecars cut off together do not
        reconnect in lockstep."""
        ceiling = min(self.maximum, self.initial * (1 << min(max(failures - 1, 0), 30)))
        return ceiling.total_seconds() * random.uniform(0.5, 1.0)  # noqa: S311 (not crypto)


@dataclass(frozen=True, slots=True)
class Revocation:
    """One verified revocation, as the watcher yields it."""

    seq: int
    kind: RevocationKind
    subject: str | None
    """The requester (task), the ID or pattern (identity); the requester for a credential."""
    task_id: str | None
    jti: str | None
    revoked_at: dt.datetime
    expires_at: dt.datetime
    """It stays in force until then: nothing it revokes outlives it."""
    reason: str
    initiator: str
    set_jti: str

    def as_json(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "kind": self.kind.value,
            "subject": self.subject,
            "task_id": self.task_id,
            "jti": self.jti,
            "revoked_at": self.revoked_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "reason": self.reason,
            "initiator": self.initiator,
            "set_jti": self.set_jti,
        }


def _epoch_time(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


class RevocationWatcher:
    """Follows the server's revocation stream; see the module docstring.

    `since` resumes after a seq you persisted (None: start from a snapshot); `issuer`, when
    given, is the `iss` every SET must carry; `keys` defaults to the server's JWKS over gRPC.
    The client stays the caller's to close.
    """

    def __init__(
        self,
        client: TaskpassClient,
        *,
        since: int | None = None,
        issuer: str | None = None,
        keys: JwksCache | None = None,
        backoff: Backoff | None = None,
        clock: Clock | None = None,
    ) -> None:
        if since is not None and since < 0:
            raise ValueError("since must not be negative")
        self._clock = clock or SystemClock()
        self._stub = pb_grpc.RevocationServiceStub(client.channel)
        keys = keys or JwksCache(GrpcJwks(client), algorithms=ALGORITHMS, clock=self._clock)
        self._verifier = SecurityEventVerifier(keys, issuer=issuer, clock=self._clock)
        self._backoff = backoff or Backoff()
        self._cursor = since
        self._ready = asyncio.Event()
        self._jtis: dict[str, dt.datetime] = {}
        self._tasks: dict[tuple[str, str], dt.datetime] = {}
        self._identities: dict[str, tuple[int, dt.datetime]] = {}
        self._sets: dict[str, tuple[int, dt.datetime]] = {}  # SET jti -> (seq, expiry)
        self.duplicates = 0
        self.rejected = 0
        self.reconnects = 0
        self.last_rejection: RejectedEvent | None = None

    @property
    def cursor(self) -> int | None:
        """The last seq processed: persist it to resume after a restart."""
        return self._cursor

    async def wait_ready(self) -> None:
        """Until the watcher has caught up with the server once (snapshot or replay done)."""
        await self._ready.wait()

    # -- the local answer ----------------------------------------------------------------------

    def is_revoked(
        self,
        jti: str,
        *,
        subject: str | None = None,
        task_id: str | None = None,
        issued_at: int | None = None,
    ) -> bool:
        """Whether the token is revoked. With the jti alone only single-credential revocations
        are seen: give the token's `sub`, `txn` and `iat` for task and identity revocations."""
        now = self._clock.now()
        expiry = self._jtis.get(jti)
        if expiry is not None and expiry > now:
            return True
        if subject is None:
            return False
        if task_id is not None:
            expiry = self._tasks.get((subject, task_id))
            if expiry is not None and expiry > now:
                return True
        for pattern, (at, expiry) in list(self._identities.items()):
            issued_before = issued_at is None or issued_at <= at
            if expiry > now and issued_before and pattern_matches(pattern, subject):
                return True
        return False

    def is_token_revoked(self, claims: Mapping[str, Any]) -> bool:
        """Whether a verified token (its claims) is revoked by any event in force."""
        jti, sub, txn, iat = (claims.get(k) for k in ("jti", "sub", "txn", "iat"))
        return self.is_revoked(
            jti if isinstance(jti, str) else "",
            subject=sub if isinstance(sub, str) else None,
            task_id=txn if isinstance(txn, str) else None,
            issued_at=iat if isinstance(iat, int) else None,
        )

    # -- the stream ----------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Revocation]:
        return self.events()

    async def run(self) -> None:
        """Follow the stream without looking at the events (for `is_revoked` users)."""
        async for _ in self.events():
            pass

    async def events(self) -> AsyncIterator[Revocation]:
        """Verified revocations, each once, until the consumer stops; raises the SDK's typed
        error for a status reconnecting cannot fix (PermissionDenied, AttestationFailed, ...)."""
        failures = 0
        while True:
            request = (
                pb.WatchRequest() if self._cursor is None else pb.WatchRequest(since=self._cursor)
            )
            call = self._stub.Watch(request)
            try:
                async for response in call:
                    failures = 0
                    async for revocation in self._handle(response):
                        yield revocation
                    if response.WhichOneof("item") == "end":
                        break
                else:
                    failures += 1  # the server closed the stream without saying where to resume
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRYABLE:
                    raise from_rpc_error(error) from None
                failures += 1
                if error.code() == grpc.StatusCode.DATA_LOSS:
                    log.warning(
                        "revocation stream refused: %s; retrying with backoff after %s",
                        error.details(),
                        self._cursor,
                    )
                else:
                    log.info(
                        "revocation stream lost (%s); resuming after %s",
                        error.code().name,
                        self._cursor,
                    )
            except Unavailable as error:  # no JWKS to verify an event with: it is sent again
                failures += 1
                log.warning("cannot verify revocation events yet: %s", error.message)
            finally:
                call.cancel()
            self.reconnects += 1
            if failures:
                await asyncio.sleep(self._backoff.delay(failures))

    async def _handle(self, response: pb.WatchResponse) -> AsyncIterator[Revocation]:
        item = response.WhichOneof("item")
        if item == "event":
            event = response.event
            if self._cursor is not None and event.seq <= self._cursor:
                self.duplicates += 1
                return
            accepted = await self._accept(event)
            self._cursor = event.seq
            if accepted is not None:
                yield accepted
        elif item == "snapshot":
            for event in response.snapshot.events:
                accepted = await self._accept(event)
                if accepted is not None:
                    yield accepted
            if response.snapshot.complete:
                self._cursor = response.snapshot.seq
        elif item == "heartbeat":
            beat = response.heartbeat.seq
            self._cursor = beat if self._cursor is None else max(self._cursor, beat)
            self._prune()
            self._ready.set()
        elif item == "end":
            log.info("revocation stream ended by the server: %s", response.end.reason)

    async def _accept(self, event: pb.RevocationEvent) -> Revocation | None:
        """Verify and apply one event; None when it is a duplicate, expired or rejected.
        Unavailable (the keys cannot be fetched yet) passes through: the event is not seen."""
        try:
            expires_at = _expiry(event)
            if expires_at <= self._clock.now():
                return None  # nothing it revokes can still be presented
            signed = await self._verifier.verify(event.security_event_token)
            _check_fields(event, signed)
            if self._received_before(event.seq, signed.set_jti):
                self.duplicates += 1
                return None
        except RejectedEvent as rejection:
            self.rejected += 1
            self.last_rejection = rejection
            log.warning("seq %d: %s", event.seq, rejection.message)
            return None
        self._apply(signed, expires_at)
        self._sets[signed.set_jti] = (event.seq, expires_at)
        return Revocation(
            seq=event.seq,
            kind=signed.kind,
            subject=signed.subject or event.subject or None,
            task_id=signed.task_id,
            jti=signed.jti,
            revoked_at=_epoch_time(signed.revoked_at),
            expires_at=expires_at,
            reason=signed.reason,
            initiator=signed.initiator,
            set_jti=signed.set_jti,
        )

    def _received_before(self, seq: int, set_jti: str) -> bool:
        """Whether this SET came before as this seq (a snapshot sent again); RejectedEvent if it
        came as another seq (replayed)."""
        known = self._sets.get(set_jti)
        if known is not None and known[0] != seq:
            raise RejectedEvent(
                RejectReason.REPLAYED,
                f"revocation event rejected (replayed): its SET was already received as seq "
                f"{known[0]}",
            )
        return known is not None

    def _apply(self, signed: SignedRevocation, expires_at: dt.datetime) -> None:
        if signed.kind is RevocationKind.CREDENTIAL and signed.jti is not None:
            self._jtis[signed.jti] = max(expires_at, self._jtis.get(signed.jti, expires_at))
        elif signed.kind is RevocationKind.TASK and signed.subject and signed.task_id:
            key = (signed.subject, signed.task_id)
            self._tasks[key] = max(expires_at, self._tasks.get(key, expires_at))
        elif signed.kind is RevocationKind.IDENTITY and signed.subject:
            at, until = self._identities.get(signed.subject, (signed.revoked_at, expires_at))
            self._identities[signed.subject] = (
                max(at, signed.revoked_at),
                max(until, expires_at),
            )

    def _prune(self) -> None:
        # Rebuilt, not edited in place: is_revoked may be reading from another thread.
        now = self._clock.now()
        self._jtis = {k: v for k, v in self._jtis.items() if v > now}
        self._tasks = {k: v for k, v in self._tasks.items() if v > now}
        self._identities = {k: v for k, v in self._identities.items() if v[1] > now}
        self._sets = {k: v for k, v in self._sets.items() if v[1] > now}


def _expiry(event: pb.RevocationEvent) -> dt.datetime:
    try:
        return from_timestamp(event.expires_at)
    except ValueError:  # seconds beyond what a datetime (and a valid Timestamp) can hold
        raise RejectedEvent(
            RejectReason.MALFORMED,
            "revocation event rejected (malformed): its expires_at is not a date in years 1..9999",
        ) from None


def _check_fields(event: pb.RevocationEvent, signed: SignedRevocation) -> None:
    """The stream's plain fields must say what the signed SET says."""
    kind = _KINDS.get(event.kind)
    same = (
        kind is signed.kind
        and event.jti == (signed.jti or "")
        and event.task_id == (signed.task_id or "")
        and (signed.kind is RevocationKind.CREDENTIAL or event.subject == signed.subject)
    )
    if not same:
        raise RejectedEvent(
            RejectReason.MISMATCH,
            "revocation event rejected (mismatch): its fields differ from its signed SET",
        )
