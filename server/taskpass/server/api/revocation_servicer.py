"""RevocationService: Watch (the live stream), Revoke, Ban, Unban, ListBans.

Parse, call the revocation service, convert.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from taskpass._proto.v1 import revocation_pb2 as pb
from taskpass._proto.v1 import revocation_pb2_grpc as pb_grpc
from taskpass.server.api.authz import Access, current_workload
from taskpass.server.api.convert import timestamp
from taskpass.server.api.status import abort_with
from taskpass.server.errors import InvalidRequest, TaskpassError
from taskpass.server.revocation.hub import EndOfStream, Heartbeat, SnapshotChunk, StreamItem
from taskpass.server.revocation.service import RevocationService
from taskpass.server.store.records import (
    BanRecord,
    CredentialRecord,
    RevocationEvent,
    RevocationKind,
)

Context = grpc.aio.ServicerContext[Any, Any]

SERVICE = pb.DESCRIPTOR.services_by_name["RevocationService"].full_name
AUTHORIZATION: dict[str, Access] = {
    f"/{SERVICE}/Watch": Access.members_of("subscribers"),
    f"/{SERVICE}/Revoke": Access.members_of("admins"),
    f"/{SERVICE}/Ban": Access.members_of("admins"),
    f"/{SERVICE}/Unban": Access.members_of("admins"),
    f"/{SERVICE}/ListBans": Access.members_of("admins"),
}

MAX_LISTED_JTIS = 1000

_KINDS = {
    RevocationKind.CREDENTIAL: pb.REVOCATION_KIND_CREDENTIAL,
    RevocationKind.TASK: pb.REVOCATION_KIND_TASK,
    RevocationKind.IDENTITY: pb.REVOCATION_KIND_IDENTITY,
    RevocationKind.KEY: pb.REVOCATION_KIND_KEY,
    RevocationKind.POLICY: pb.REVOCATION_KIND_POLICY,
}


def event_message(event: RevocationEvent) -> pb.RevocationEvent:
    return pb.RevocationEvent(
        seq=event.seq,
        kind=_KINDS[event.kind],
        subject=event.subject,
        task_id=event.task_id or "",
        jti=event.jti or "",
        expires_at=timestamp(event.expires_at),
        revoked_at=timestamp(event.at),
        reason=event.reason,
        security_event_token=event.set_token,
    )


@functools.lru_cache(maxsize=4096)
def _event_response(event: RevocationEvent) -> pb.WatchResponse:
    # Built once per event, not once per subscriber: the fan-out sends the same event N times.
    return pb.WatchResponse(event=event_message(event))


def stream_message(item: StreamItem) -> pb.WatchResponse:
    if isinstance(item, RevocationEvent):
        return _event_response(item)
    if isinstance(item, Heartbeat):
        return pb.WatchResponse(heartbeat=pb.Heartbeat(seq=item.seq, at=timestamp(item.at)))
    if isinstance(item, SnapshotChunk):
        return pb.WatchResponse(
            snapshot=pb.Snapshot(
                events=[event_message(e) for e in item.events],
                seq=item.seq,
                complete=item.complete,
            )
        )
    if isinstance(item, EndOfStream):
        return pb.WatchResponse(
            end=pb.EndOfStream(resume_after=item.resume_after, reason=item.reason)
        )
    raise TypeError(f"not a stream item: {type(item).__name__}")


def _ban_message(ban: BanRecord) -> pb.IdentityBan:
    return pb.IdentityBan(
        identity=ban.pattern,
        banned_at=timestamp(ban.banned_at),
        banned_by=ban.banned_by,
        reason=ban.reason,
    )


def _jtis(credentials: Sequence[CredentialRecord]) -> list[str]:
    return [c.jti for c in credentials[:MAX_LISTED_JTIS]]


def _optional_event(event: RevocationEvent | None) -> pb.RevocationEvent | None:
    return None if event is None else event_message(event)


class RevocationServicer(pb_grpc.RevocationServiceServicer):
    def __init__(self, *, revocations: RevocationService) -> None:
        self._revocations = revocations

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_RevocationServiceServicer_to_server(self, server)

    async def Watch(
        self, request: pb.WatchRequest, context: Context
    ) -> AsyncIterator[pb.WatchResponse]:
        since = request.since if request.HasField("since") else None
        try:
            async for item in self._revocations.hub.watch(since):
                yield stream_message(item)
        except TaskpassError as error:
            await abort_with(context, error)

    async def Revoke(self, request: pb.RevokeRequest, context: Context) -> pb.RevokeResponse:
        actor = current_workload()
        try:
            target = request.WhichOneof("target")
            if target == "identity":
                banned = await self._revocations.ban(actor, request.identity, reason=request.reason)
                revoked, event = banned.credentials, banned.event
            elif target == "jti":
                done = await self._revocations.revoke_credential(
                    actor, request.jti, reason=request.reason
                )
                revoked, event = done.credentials, done.event
            elif target == "task":
                done = await self._revocations.revoke_task(
                    actor,
                    requester=request.task.requester,
                    task_id=request.task.task_id,
                    reason=request.reason,
                )
                revoked, event = done.credentials, done.event
            else:
                raise InvalidRequest("target", "give one of jti, task or identity")
        except TaskpassError as error:
            await abort_with(context, error)
        return pb.RevokeResponse(
            revoked_count=len(revoked), revoked_jtis=_jtis(revoked), event=_optional_event(event)
        )

    async def Ban(self, request: pb.BanRequest, context: Context) -> pb.BanResponse:
        try:
            banned = await self._revocations.ban(
                current_workload(), request.identity, reason=request.reason
            )
        except TaskpassError as error:
            await abort_with(context, error)
        return pb.BanResponse(
            ban=_ban_message(banned.ban),
            revoked_count=len(banned.credentials),
            revoked_jtis=_jtis(banned.credentials),
            event=_optional_event(banned.event),
        )

    async def Unban(self, request: pb.UnbanRequest, context: Context) -> pb.UnbanResponse:
        try:
            lifted = await self._revocations.unban(
                current_workload(), request.identity, reason=request.reason
            )
        except TaskpassError as error:
            await abort_with(context, error)
        return pb.UnbanResponse(ban=_ban_message(lifted))

    async def ListBans(self, request: pb.ListBansRequest, context: Context) -> pb.ListBansResponse:
        try:
            bans = await self._revocations.list_bans()
        except TaskpassError as error:
            await abort_with(context, error)
        return pb.ListBansResponse(bans=[_ban_message(b) for b in bans])
