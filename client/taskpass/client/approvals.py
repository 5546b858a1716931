"""The approver's SDK: see pending requests live, approve or deny them.

async with TaskpassClient.from_files(...) as client:      # the approver's own SVID
    approvals = ApprovalsClient.over(client)
    async for approval in approvals.watch():              # pending ones first, then live
        if approval.state == "pending" and looks_right(approval):
            await approvals.approve(approval.approval_id)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import grpc

from taskpass._proto.v1 import approval_pb2 as pb
from taskpass._proto.v1 import approval_pb2_grpc as pb_grpc
from taskpass._proto.v1 import credential_pb2 as credential_pb
from taskpass.client.client import TaskpassClient
from taskpass.client.errors import from_rpc_error
from taskpass.client.models import Task
from taskpass.client.timestamps import from_timestamp

_STATES = {
    pb.APPROVAL_STATE_PENDING: "pending",
    pb.APPROVAL_STATE_APPROVED: "approved",
    pb.APPROVAL_STATE_DENIED: "denied",
    pb.APPROVAL_STATE_CONSUMED: "consumed",
    pb.APPROVAL_STATE_EXPIRED: "expired",
}
_SENSITIVITIES = {
    credential_pb.SENSITIVITY_PUBLIC: "public",
    credential_pb.SENSITIVITY_INTERNAL: "internal",
    credential_pb.SENSITIVITY_CONFIDENTIAL: "confidential",
    credential_pb.SENSITIVITY_RESTRICTED: "restricted",
}


@dataclass(frozen=True, slots=True)
class Approval:
    """A request for approval as an approver sees it: who asks, for what, under which rules."""

    approval_id: str
    state: str
    """pending | approved | denied | consumed | expired"""
    requester: str
    attestation_method: str
    cert_sha256: str
    task: Task
    task_digest: str
    scopes: tuple[str, ...]
    ttl_seconds: int
    rules: tuple[str, ...]
    approver_groups: tuple[str, ...]
    policy_version: str
    decision_id: str
    created_at: dt.datetime
    expires_at: dt.datetime
    decided_by: str
    decided_at: dt.datetime | None
    reason: str
    parent_jti: str = ""
    """A delegated exchange: the jti of the parent credential it was asked under (the grant
    serves that parent only); empty when asked without one."""

    @classmethod
    def from_proto(cls, m: pb.Approval) -> Approval:
        t = m.task
        return cls(
            approval_id=m.approval_id,
            state=_STATES.get(m.state, "unknown"),
            requester=m.requester,
            attestation_method=m.attestation_method,
            cert_sha256=m.cert_sha256,
            task=Task(
                task_id=t.task_id,
                audience=t.audience,
                action=t.action,
                sensitivity=_SENSITIVITIES.get(t.sensitivity, "unknown"),
                ttl=dt.timedelta(seconds=t.requested_ttl_seconds),
                tool=t.tool,
                environment=t.environment,
                deadline=from_timestamp(t.deadline) if t.HasField("deadline") else None,
                reason=t.reason,
                attributes=dict(t.attributes),
            ),
            task_digest=m.task_digest,
            scopes=tuple(m.scopes),
            ttl_seconds=m.ttl_seconds,
            rules=tuple(m.rules),
            approver_groups=tuple(m.approver_groups),
            policy_version=m.policy_version,
            decision_id=m.decision_id,
            created_at=from_timestamp(m.created_at),
            expires_at=from_timestamp(m.expires_at),
            decided_by=m.decided_by,
            decided_at=from_timestamp(m.decided_at) if m.HasField("decided_at") else None,
            reason=m.reason,
            parent_jti=m.parent_jti,
        )

    def as_json(self) -> dict[str, object]:
        t = self.task
        return {
            "approval_id": self.approval_id,
            "state": self.state,
            "requester": self.requester,
            "attestation_method": self.attestation_method,
            "cert_sha256": self.cert_sha256,
            "task": {
                "task_id": t.task_id,
                "audience": t.audience,
                "action": t.action,
                "sensitivity": t.sensitivity,
                "requested_ttl_seconds": int(t.ttl.total_seconds()),
                "tool": t.tool,
                "environment": t.environment,
                "deadline": t.deadline.isoformat() if t.deadline else None,
                "reason": t.reason,
                "attributes": dict(t.attributes),
            },
            "task_digest": self.task_digest,
            "scopes": list(self.scopes),
            "ttl_seconds": self.ttl_seconds,
            "rules": list(self.rules),
            "approver_groups": list(self.approver_groups),
            "policy_version": self.policy_version,
            "decision_id": self.decision_id,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "decided_by": self.decided_by or None,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "reason": self.reason,
            "parent_jti": self.parent_jti or None,
        }


class ApprovalsClient:
    """ApprovalService over a channel (share a TaskpassClient's with `over`)."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float = 10.0) -> None:
        self._stub = pb_grpc.ApprovalServiceStub(channel)
        self._timeout = timeout

    @classmethod
    def over(cls, client: TaskpassClient) -> ApprovalsClient:
        return cls(client.channel, timeout=client.timeout)

    async def list_pending(self) -> tuple[Approval, ...]:
        """The pending requests you may decide (not your own), oldest first."""
        try:
            response = await self._stub.ListPending(pb.ListPendingRequest(), timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return tuple(Approval.from_proto(a) for a in response.approvals)

    async def watch(self) -> AsyncGenerator[Approval, None]:
        """Every pending request you may decide, then each new one and each change, live.

        The same approval can arrive again with a new state; the latest wins. Runs until the
        server ends the stream or the caller stops iterating.
        """
        call = self._stub.WatchPending(pb.WatchPendingRequest())
        try:
            async for message in call:
                yield Approval.from_proto(message.approval)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()

    async def approve(self, approval_id: str, *, comment: str = "") -> Approval:
        return await self._unary(
            self._stub.Approve, pb.ApproveRequest(approval_id=approval_id, comment=comment)
        )

    async def deny(self, approval_id: str, *, reason: str) -> Approval:
        return await self._unary(
            self._stub.Deny, pb.DenyRequest(approval_id=approval_id, reason=reason)
        )

    async def get(self, approval_id: str) -> Approval:
        return await self._unary(self._stub.Get, pb.GetApprovalRequest(approval_id=approval_id))

    async def _unary(self, method: Any, request: Any) -> Approval:
        try:
            response = await method(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return Approval.from_proto(response)
