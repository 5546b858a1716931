"""The SDK's watcher against a scripted RevocationService on loopback: what it refuses to apply
(forged, tampered, replayed, mismatched SETs), and how it reconnects and resumes."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from taskpass._proto.v1 import credential_pb2, credential_pb2_grpc
from taskpass._proto.v1 import revocation_pb2 as pb
from taskpass._proto.v1 import revocation_pb2_grpc as pb_grpc
from taskpass.client import PermissionDenied, TaskpassClient
from taskpass.client.jwks import GrpcJwks, JwksCache
from taskpass.client.security_events import ALGORITHMS, RejectReason
from taskpass.client.watcher import Backoff, RevocationWatcher
from taskpass.server.api.revocation_servicer import event_message
from taskpass.server.clock import FixedClock
from taskpass.server.issuer.jws import header_segment, json_segment, sign_compact, sign_segments
from taskpass.server.issuer.keys import KeyRing
from taskpass.server.issuer.tokens import TokenIssuer
from taskpass.server.revocation.events import EventSigner, Initiator
from taskpass.server.store.records import CredentialRecord, NewRevocation, RevocationEvent
from tests.integration.watching import WAIT, Follower

ISSUER = "https://taskpass.test"
AGENT = "spiffe://example.org/agents/billing-bot"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
QUICK = Backoff(initial=dt.timedelta(milliseconds=10), maximum=dt.timedelta(milliseconds=50))

Script = list[pb.WatchResponse]


@dataclass
class FakeServer:
    """Serves each Watch call the next script (then keeps the stream open), and GetJwks."""

    scripts: list[Script]
    jwks: list[dict[str, Any]]
    abort_first_with: grpc.StatusCode | None = None
    requests: list[int | None] = field(default_factory=list)
    jwks_fetches: int = 0


class _Revocations(pb_grpc.RevocationServiceServicer):
    def __init__(self, fake: FakeServer) -> None:
        self._fake = fake

    async def Watch(
        self, request: pb.WatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchResponse]:
        fake = self._fake
        fake.requests.append(request.since if request.HasField("since") else None)
        if fake.abort_first_with is not None and len(fake.requests) == 1:
            await context.abort(fake.abort_first_with, "scripted failure")
        script = fake.scripts[min(len(fake.requests), len(fake.scripts)) - 1]
        for response in script:
            yield response
        if not script or script[-1].WhichOneof("item") != "end":
            await asyncio.Event().wait()


class _Credentials(credential_pb2_grpc.CredentialServiceServicer):
    def __init__(self, fake: FakeServer) -> None:
        self._fake = fake

    async def GetJwks(
        self, request: credential_pb2.GetJwksRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> credential_pb2.GetJwksResponse:
        fake = self._fake
        document = fake.jwks[min(fake.jwks_fetches, len(fake.jwks) - 1)]
        fake.jwks_fetches += 1
        return credential_pb2.GetJwksResponse(jwks_json=json.dumps(document))


Serve = Callable[[FakeServer], Awaitable[TaskpassClient]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a fake server and return a plaintext client to it; both are closed at the end."""
    servers: list[grpc.aio.Server] = []
    clients: list[TaskpassClient] = []

    async def start(fake: FakeServer) -> TaskpassClient:
        server = grpc.aio.server()
        # Only the methods the watcher calls are scripted; the others stay unimplemented.
        revocations = _Revocations(fake)  # type: ignore[abstract]
        credentials = _Credentials(fake)  # type: ignore[abstract]
        pb_grpc.add_RevocationServiceServicer_to_server(revocations, server)
        credential_pb2_grpc.add_CredentialServiceServicer_to_server(credentials, server)
        port = server.add_insecure_port("127.0.0.1:0")
        servers.append(server)
        await server.start()
        clients.append(TaskpassClient(grpc.aio.insecure_channel(f"127.0.0.1:{port}")))
        return clients[-1]

    yield start
    for client in clients:
        await client.aclose()
    for server in servers:
        await server.stop(None)


class Keys:
    """The issuer's key ring, and an attacker's."""

    def __init__(self, directory: Path) -> None:
        clock = FixedClock(NOW)
        self.ring = KeyRing.load_or_create(directory / "keys", algorithm="ES256", clock=clock)
        self.attacker = KeyRing.load_or_create(directory / "evil", algorithm="ES256", clock=clock)
        issuer = TokenIssuer(issuer=ISSUER, keys=self.ring, clock=clock)
        self.signer = EventSigner(issuer=issuer, keys=self.ring, clock=clock)

    def event(self, seq: int, jti: str, *, token: str | None = None) -> pb.WatchResponse:
        """A credential revocation as the server streams it (optionally with another SET)."""
        record = CredentialRecord(
            jti=jti,
            requester=AGENT,
            task_id="t-1",
            audience="payments-api",
            scopes=(),
            issued_at=NOW,
            expires_at=NOW + dt.timedelta(minutes=10),
            policy_version="v1",
            kid="k",
        )
        new = self.signer.credential(record, reason="leaked", initiator=Initiator.ADMIN)
        stored = RevocationEvent.numbered(seq, new)
        message = event_message(stored)
        if token is not None:
            message.security_event_token = token
        return pb.WatchResponse(event=message)

    def claims_of(self, response: pb.WatchResponse) -> dict[str, Any]:
        payload = response.event.security_event_token.split(".")[1]
        return dict(json.loads(base64.urlsafe_b64decode(payload + "==")))


def heartbeat(seq: int) -> pb.WatchResponse:
    return pb.WatchResponse(heartbeat=pb.Heartbeat(seq=seq))


def b64(value: dict[str, Any]) -> str:
    return json_segment(value).decode()


def tampered(keys: Keys, seq: int, first: pb.WatchResponse) -> pb.WatchResponse:
    genuine = keys.event(seq, "bad")
    head, _, signature = genuine.event.security_event_token.split(".")
    claims = keys.claims_of(genuine)
    claims["sub_id"]["jti"] = "evil"
    message = keys.event(seq, "evil", token=f"{head}.{b64(claims)}.{signature}")
    return message


def forged_with_our_kid(keys: Keys, seq: int, first: pb.WatchResponse) -> pb.WatchResponse:
    claims = keys.claims_of(keys.event(seq, "evil"))
    header = header_segment("ES256", keys.ring.active.kid, "secevent+jwt")
    token = sign_segments(keys.attacker.active, header, json_segment(claims))
    return keys.event(seq, "evil", token=token)


def signed_by_an_unknown_key(keys: Keys, seq: int, first: pb.WatchResponse) -> pb.WatchResponse:
    claims = keys.claims_of(keys.event(seq, "evil"))
    token = sign_compact(keys.attacker.active, typ="secevent+jwt", claims=claims)
    return keys.event(seq, "evil", token=token)


def replayed(keys: Keys, seq: int, first: pb.WatchResponse) -> pb.WatchResponse:
    return keys.event(seq, "good-1", token=first.event.security_event_token)


def fields_differ(keys: Keys, seq: int, first: pb.WatchResponse) -> pb.WatchResponse:
    genuine = keys.event(seq, "bad")
    message = keys.event(seq, "evil", token=genuine.event.security_event_token)
    return message


def an_access_token(keys: Keys, seq: int, first: pb.WatchResponse) -> pb.WatchResponse:
    claims = keys.claims_of(keys.event(seq, "evil"))
    token = sign_compact(keys.ring.active, typ="at+jwt", claims=claims)
    return keys.event(seq, "evil", token=token)


def another_issuer(keys: Keys, seq: int, first: pb.WatchResponse) -> pb.WatchResponse:
    claims = keys.claims_of(keys.event(seq, "evil"))
    claims["iss"] = claims["sub_id"]["iss"] = "https://evil.example"
    token = sign_compact(keys.ring.active, typ="secevent+jwt", claims=claims)
    return keys.event(seq, "evil", token=token)


BAD_EVENTS = [
    pytest.param(tampered, RejectReason.BAD_SIGNATURE, id="payload-tampered"),
    pytest.param(forged_with_our_kid, RejectReason.BAD_SIGNATURE, id="forged-under-our-kid"),
    pytest.param(signed_by_an_unknown_key, RejectReason.UNKNOWN_KEY, id="unknown-key"),
    pytest.param(replayed, RejectReason.REPLAYED, id="replayed-under-another-seq"),
    pytest.param(fields_differ, RejectReason.MISMATCH, id="fields-differ-from-the-set"),
    pytest.param(an_access_token, RejectReason.WRONG_TYPE, id="access-token-not-a-set"),
    pytest.param(another_issuer, RejectReason.WRONG_ISSUER, id="another-issuer"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_EVENTS)
async def test_a_forged_or_replayed_set_is_rejected_and_the_stream_goes_on(
    serve: Serve,
    tmp_path: Path,
    bad: Callable[[Keys, int, pb.WatchResponse], pb.WatchResponse],
    reason: RejectReason,
) -> None:
    keys = Keys(tmp_path)
    first = keys.event(1, "good-1")
    script = [first, bad(keys, 2, first), keys.event(3, "good-3"), heartbeat(3)]
    client = await serve(FakeServer(scripts=[script], jwks=[keys.ring.jwks()]))
    follower = Follower(RevocationWatcher(client, issuer=ISSUER, backoff=QUICK))
    try:
        await follower.ready()
    finally:
        await follower.stop()

    watcher = follower.watcher
    assert follower.seqs == [1, 3]
    assert watcher.rejected == 1
    assert watcher.last_rejection is not None
    assert watcher.last_rejection.reason is reason
    assert watcher.is_revoked("good-1")
    assert not watcher.is_revoked("evil")
    assert watcher.cursor == 3


async def test_a_set_signed_by_a_newly_published_key_verifies_after_one_refetch(
    serve: Serve, tmp_path: Path
) -> None:
    keys = Keys(tmp_path)
    before_rotation = keys.ring.jwks()
    first = keys.event(1, "before-rotation")  # the watcher fetches the JWKS for this one
    keys.ring.rotate()
    keys.ring.promote()
    script = [first, keys.event(2, "after-rotation"), heartbeat(2)]
    fake = FakeServer(scripts=[script], jwks=[before_rotation, keys.ring.jwks()])
    client = await serve(fake)
    cache = JwksCache(GrpcJwks(client), algorithms=ALGORITHMS, refetch_cooldown=dt.timedelta(0))
    follower = Follower(RevocationWatcher(client, issuer=ISSUER, keys=cache, backoff=QUICK))
    try:
        await follower.ready()
    finally:
        await follower.stop()
    assert follower.seqs == [1, 2]
    assert fake.jwks_fetches == 2


async def test_an_event_sent_twice_is_applied_once_and_not_taken_for_a_replay(
    serve: Serve, tmp_path: Path
) -> None:
    keys = Keys(tmp_path)
    again = keys.event(1, "good-1")
    script = [again, again, keys.event(2, "good-2"), heartbeat(2)]
    client = await serve(FakeServer(scripts=[script], jwks=[keys.ring.jwks()]))
    follower = Follower(RevocationWatcher(client, issuer=ISSUER, backoff=QUICK))
    try:
        await follower.ready()
    finally:
        await follower.stop()
    assert follower.seqs == [1, 2]
    assert (follower.watcher.duplicates, follower.watcher.rejected) == (1, 0)


async def test_an_expired_event_is_skipped_without_verifying_it(
    serve: Serve, tmp_path: Path
) -> None:
    keys = Keys(tmp_path)
    old = keys.event(1, "long-gone", token="not-even-a-jws")
    old.event.expires_at.FromDatetime(NOW - dt.timedelta(minutes=1))
    script = [old, keys.event(2, "current"), heartbeat(2)]
    client = await serve(FakeServer(scripts=[script], jwks=[keys.ring.jwks()]))
    follower = Follower(RevocationWatcher(client, issuer=ISSUER, backoff=QUICK))
    try:
        await follower.ready()
    finally:
        await follower.stop()
    assert follower.seqs == [2]
    assert follower.watcher.rejected == 0


async def test_after_an_end_of_stream_the_watcher_resumes_from_its_cursor(
    serve: Serve, tmp_path: Path
) -> None:
    keys = Keys(tmp_path)
    end = pb.WatchResponse(end=pb.EndOfStream(resume_after=1, reason="fell behind"))
    first = [keys.event(1, "one"), end]
    second = [keys.event(2, "two"), heartbeat(2)]
    fake = FakeServer(scripts=[first, second], jwks=[keys.ring.jwks()])
    client = await serve(fake)
    follower = Follower(RevocationWatcher(client, issuer=ISSUER, backoff=QUICK))
    try:
        await follower.ready()
    finally:
        await follower.stop()
    assert follower.seqs == [1, 2]
    assert fake.requests == [None, 1]


async def test_an_unavailable_server_is_retried_with_backoff(serve: Serve, tmp_path: Path) -> None:
    keys = Keys(tmp_path)
    script = [keys.event(1, "one"), heartbeat(1)]
    fake = FakeServer(
        scripts=[script], jwks=[keys.ring.jwks()], abort_first_with=grpc.StatusCode.UNAVAILABLE
    )
    client = await serve(fake)
    follower = Follower(RevocationWatcher(client, issuer=ISSUER, since=0, backoff=QUICK))
    try:
        await follower.ready()
    finally:
        await follower.stop()
    assert follower.seqs == [1]
    assert fake.requests == [0, 0]


@dataclass(frozen=True, slots=True, kw_only=True)
class CountedBackoff(Backoff):
    """A short wait, each recorded with the failure count it was asked for."""

    asked: list[int] = field(default_factory=list)

    def delay(self, failures: int) -> float:
        self.asked.append(failures)
        return 0.01


async def test_a_server_that_cannot_read_its_database_is_retried_with_backoff_and_a_warning(
    serve: Serve, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # DATA_LOSS: only the server's operator can fix it; the watcher keeps trying (backing off,
    # not at once as after an EndOfStream) and says why at WARNING, so a sidecar's revocations
    # resume by themselves once the row is restored rather than freeze with the watcher gone.
    keys = Keys(tmp_path)
    script = [keys.event(1, "one"), heartbeat(1)]
    fake = FakeServer(
        scripts=[script], jwks=[keys.ring.jwks()], abort_first_with=grpc.StatusCode.DATA_LOSS
    )
    backoff = CountedBackoff()
    caplog.set_level(logging.WARNING, logger="taskpass.client.watcher")
    client = await serve(fake)
    follower = Follower(RevocationWatcher(client, issuer=ISSUER, since=0, backoff=backoff))
    try:
        await follower.ready()
    finally:
        await follower.stop()
    assert follower.seqs == [1]
    assert fake.requests == [0, 0]
    assert backoff.asked == [1]
    logged = [r for r in caplog.records if r.name == "taskpass.client.watcher"]
    assert [(r.levelno, r.getMessage()) for r in logged] == [
        (
            logging.WARNING,
            "revocation stream refused: scripted failure; retrying with backoff after 0",
        )
    ]


async def test_a_refusal_the_server_will_not_change_its_mind_on_ends_the_watcher(
    serve: Serve, tmp_path: Path
) -> None:
    keys = Keys(tmp_path)
    fake = FakeServer(
        scripts=[[]], jwks=[keys.ring.jwks()], abort_first_with=grpc.StatusCode.PERMISSION_DENIED
    )
    follower = Follower(RevocationWatcher(await serve(fake), backoff=QUICK))
    error = await asyncio.wait_for(follower.finished(), WAIT)
    assert isinstance(error, PermissionDenied)
    assert fake.requests == [None]


REPORT_BOT = "spiffe://example.org/agents/report-bot"
BATCH = "spiffe://example.org/batch/**"


def stored(seq: int, new: NewRevocation, *, lasts: dt.timedelta) -> pb.WatchResponse:
    """As the store keeps it: numbered, in force for `lasts` (what it revoked lives that long)."""
    widened = dataclasses.replace(new, expires_at=new.at + lasts)
    return pb.WatchResponse(event=event_message(RevocationEvent.numbered(seq, widened)))


async def follow_script(serve: Serve, keys: Keys, script: Script, clock: FixedClock) -> Follower:
    client = await serve(FakeServer(scripts=[script], jwks=[keys.ring.jwks()]))
    follower = Follower(RevocationWatcher(client, issuer=ISSUER, backoff=QUICK, clock=clock))
    await follower.ready()
    await follower.stop()
    return follower


async def test_tokens_of_a_revoked_task_or_a_banned_identity_are_revoked_by_their_claims(
    serve: Serve, tmp_path: Path
) -> None:
    keys = Keys(tmp_path)
    lasts = dt.timedelta(minutes=10)
    signer = keys.signer
    script = [
        stored(
            1,
            signer.task(
                requester=AGENT, task_id="t-7", at=NOW, reason="", initiator=Initiator.USER
            ),
            lasts=lasts,
        ),
        stored(2, signer.identity(pattern=REPORT_BOT, at=NOW, reason=""), lasts=lasts),
        stored(3, signer.identity(pattern=BATCH, at=NOW, reason=""), lasts=lasts),
        heartbeat(3),
    ]
    watcher = (await follow_script(serve, keys, script, FixedClock(NOW))).watcher
    at = int(NOW.timestamp())

    assert watcher.is_revoked("any", subject=AGENT, task_id="t-7")
    assert not watcher.is_revoked("any", subject=AGENT, task_id="t-8")
    assert not watcher.is_revoked(
        "any", subject=REPORT_BOT.replace("report", "other"), task_id="t-7"
    )
    assert not watcher.is_revoked("any")  # a task names no jti: the claims are needed
    assert watcher.is_revoked("any", subject=REPORT_BOT, issued_at=at)
    assert not watcher.is_revoked("any", subject=REPORT_BOT, issued_at=at + 1)  # after the ban
    assert watcher.is_token_revoked(
        {"jti": "j", "sub": "spiffe://example.org/batch/a/b", "iat": at}
    )
    assert not watcher.is_token_revoked(
        {"jti": "j", "sub": "spiffe://example.org/batchx/a", "iat": at}
    )


async def test_revocations_are_forgotten_once_what_they_revoke_has_expired(
    serve: Serve, tmp_path: Path
) -> None:
    keys = Keys(tmp_path)
    clock = FixedClock(NOW)
    first = keys.event(1, "jti-1")  # in force for 10 minutes
    watcher = (await follow_script(serve, keys, [first, heartbeat(1)], clock)).watcher
    assert watcher.is_revoked("jti-1")
    clock.advance(dt.timedelta(minutes=10))
    assert not watcher.is_revoked("jti-1")
