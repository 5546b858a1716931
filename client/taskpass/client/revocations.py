"""Revocation for security admins: revoke a credential or a task, ban and unban an identity.

    async with TaskpassClient.from_files(...) as client:      # an SVID in the admins group
        admin = RevocationAdmin(client)
        await admin.revoke_task("t-42", requester="spiffe://example.org/agents/billing-bot")
        await admin.ban("spiffe://example.org/agents/**", reason="agent fleet compromised")

Every call is PERMISSION_DENIED (PermissionDenied) for a caller outside the `admins` group.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from taskpass._proto.v1 import revocation_pb2 as pb
from taskpass._proto.v1 import revocation_pb2_grpc as pb_grpc
from taskpass.client.client import TaskpassClient
from taskpass.client.errors import from_rpc_error
from taskpass.client.timestamps import from_timestamp

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Ban:
    identity: str
    """An exact workload ID, or a pattern (`.../*` one more segment, `.../**` any depth)."""
    banned_at: dt.datetime
    banned_by: str
    reason: str

    def as_json(self) -> dict[str, object]:
        return {
            "identity": self.identity,
            "banned_at": self.banned_at.isoformat(),
            "banned_by": self.banned_by,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class RevokeResult:
    revoked_count: int
    revoked_jtis: tuple[str, ...]
    """At most 1000 of them."""
    seq: int | None
    """The revocation event's sequence number (None when nothing was announced)."""
    ban: Ban | None = None

    def as_json(self) -> dict[str, object]:
        result: dict[str, object] = {
            "revoked_count": self.revoked_count,
            "revoked_jtis": list(self.revoked_jtis),
            "seq": self.seq,
        }
        if self.ban is not None:
            result["ban"] = self.ban.as_json()
        return result


def _ban(message: pb.IdentityBan) -> Ban:
    return Ban(
        identity=message.identity,
        banned_at=from_timestamp(message.banned_at),
        banned_by=message.banned_by,
        reason=message.reason,
    )


def _result(message: pb.RevokeResponse | pb.BanResponse, ban: Ban | None = None) -> RevokeResult:
    return RevokeResult(
        revoked_count=message.revoked_count,
        revoked_jtis=tuple(message.revoked_jtis),
        seq=message.event.seq if message.HasField("event") else None,
        ban=ban,
    )


class RevocationAdmin:
    """The admin RPCs of the RevocationService, over an open client (the caller closes it)."""

    def __init__(self, client: TaskpassClient) -> None:
        self._stub = pb_grpc.RevocationServiceStub(client.channel)
        self._timeout = client.timeout

    async def revoke_credential(self, jti: str, *, reason: str = "") -> RevokeResult:
        request = pb.RevokeRequest(jti=jti, reason=reason)
        return _result(await _rpc(self._stub.Revoke(request, timeout=self._timeout)))

    async def revoke_task(
        self, task_id: str, *, requester: str = "", reason: str = ""
    ) -> RevokeResult:
        """Every credential of the task is revoked and the task ends. `requester` is the
        workload that ran it (task ids are unique per requester); empty means your own."""
        target = pb.TaskTarget(requester=requester, task_id=task_id)
        request = pb.RevokeRequest(task=target, reason=reason)
        return _result(await _rpc(self._stub.Revoke(request, timeout=self._timeout)))

    async def ban(self, identity: str, *, reason: str = "") -> RevokeResult:
        """Revoke everything the identity (or pattern) holds and refuse its exchanges until
        `unban`. Revoking an identity is this."""
        request = pb.BanRequest(identity=identity, reason=reason)
        response = await _rpc(self._stub.Ban(request, timeout=self._timeout))
        return _result(response, _ban(response.ban))

    async def unban(self, identity: str, *, reason: str = "") -> Ban:
        """Lift the ban on exactly `identity` (as banned); what it revoked stays revoked."""
        request = pb.UnbanRequest(identity=identity, reason=reason)
        response = await _rpc(self._stub.Unban(request, timeout=self._timeout))
        return _ban(response.ban)

    async def list_bans(self) -> tuple[Ban, ...]:
        response = await _rpc(self._stub.ListBans(pb.ListBansRequest(), timeout=self._timeout))
        return tuple(_ban(b) for b in response.bans)


async def _rpc(call: Awaitable[T]) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error) from None
