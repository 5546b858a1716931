"""ApprovalService: ListPending, WatchPending, Approve, Deny, Get. Parse, call, convert.

Open to any attested workload: who may see or decide an approval depends on the groups the
approval's rules name, so the approval desk checks that per request (and audits refusals).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import grpc

from taskpass._proto.v1 import approval_pb2 as pb
from taskpass._proto.v1 import approval_pb2_grpc as pb_grpc
from taskpass._proto.v1 import credential_pb2 as credential_pb
from taskpass.server.api.authz import ANY_WORKLOAD, Access, current_workload
from taskpass.server.api.convert import timestamp
from taskpass.server.api.status import abort_with
from taskpass.server.approvals.service import Approvals
from taskpass.server.clock import Clock
from taskpass.server.errors import InvalidRequest, TaskpassError
from taskpass.server.store.records import ApprovalRecord, ApprovalState, JsonObject

Context = grpc.aio.ServicerContext[Any, Any]

SERVICE = pb.DESCRIPTOR.services_by_name["ApprovalService"].full_name
AUTHORIZATION: dict[str, Access] = {
    f"/{SERVICE}/ListPending": ANY_WORKLOAD,
    f"/{SERVICE}/WatchPending": ANY_WORKLOAD,
    f"/{SERVICE}/Approve": ANY_WORKLOAD,
    f"/{SERVICE}/Deny": ANY_WORKLOAD,
    f"/{SERVICE}/Get": ANY_WORKLOAD,
}

_STATES = {
    ApprovalState.PENDING: pb.APPROVAL_STATE_PENDING,
    ApprovalState.APPROVED: pb.APPROVAL_STATE_APPROVED,
    ApprovalState.DENIED: pb.APPROVAL_STATE_DENIED,
    ApprovalState.CONSUMED: pb.APPROVAL_STATE_CONSUMED,
    ApprovalState.EXPIRED: pb.APPROVAL_STATE_EXPIRED,
}
_SENSITIVITIES = {
    "public": credential_pb.SENSITIVITY_PUBLIC,
    "internal": credential_pb.SENSITIVITY_INTERNAL,
    "confidential": credential_pb.SENSITIVITY_CONFIDENTIAL,
    "restricted": credential_pb.SENSITIVITY_RESTRICTED,
}
MAX_ID = 64


def _task_proto(descriptor: JsonObject) -> credential_pb.TaskDescriptor:
    """The stored task (TaskDescriptor.as_dict) back as the message the requester sent."""
    message = credential_pb.TaskDescriptor(
        task_id=str(descriptor.get("task_id", "")),
        audience=str(descriptor.get("audience", "")),
        action=str(descriptor.get("action", "")),
        tool=str(descriptor.get("tool", "")),
        sensitivity=_SENSITIVITIES.get(
            str(descriptor.get("sensitivity")), credential_pb.SENSITIVITY_UNSPECIFIED
        ),
        environment=str(descriptor.get("environment", "")),
        requested_ttl_seconds=int(descriptor.get("requested_ttl_seconds", 0)),
        reason=str(descriptor.get("reason", "")),
        attributes={str(k): str(v) for k, v in dict(descriptor.get("attributes", {})).items()},
    )
    deadline = descriptor.get("deadline")
    if isinstance(deadline, str):
        message.deadline.CopyFrom(timestamp(dt.datetime.fromisoformat(deadline)))
    return message


def approval_proto(approval: ApprovalRecord, state: ApprovalState) -> pb.Approval:
    message = pb.Approval(
        approval_id=approval.approval_id,
        state=_STATES[state],
        requester=approval.requester,
        attestation_method=approval.requester_method,
        cert_sha256=approval.cert_thumbprint or "",
        task=_task_proto(approval.descriptor),
        task_digest=approval.digest,
        scopes=list(approval.scopes),
        ttl_seconds=approval.ttl_seconds,
        rules=list(approval.rules),
        approver_groups=list(approval.approver_groups),
        policy_version=approval.policy_version,
        decision_id=approval.decision_id,
        created_at=timestamp(approval.created_at),
        expires_at=timestamp(approval.expires_at),
        decided_by=approval.decided_by or "",
        reason=approval.reason,
        parent_jti=approval.parent_jti or "",
    )
    if approval.decided_at is not None:
        message.decided_at.CopyFrom(timestamp(approval.decided_at))
    return message


def _approval_id(value: str) -> str:
    if not value:
        raise InvalidRequest("approval_id", "is required")
    if len(value) > MAX_ID or not value.isprintable():
        raise InvalidRequest("approval_id", f"is not an approval id (at most {MAX_ID} characters)")
    return value


class ApprovalServicer(pb_grpc.ApprovalServiceServicer):
    def __init__(self, *, approvals: Approvals, clock: Clock) -> None:
        self._approvals = approvals
        self._clock = clock

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_ApprovalServiceServicer_to_server(self, server)

    def _proto(self, approval: ApprovalRecord) -> pb.Approval:
        return approval_proto(approval, approval.effective_state(self._clock.now()))

    async def ListPending(
        self, request: pb.ListPendingRequest, context: Context
    ) -> pb.ListPendingResponse:
        try:
            pending = await self._approvals.list_pending(current_workload())
        except TaskpassError as error:
            await abort_with(context, error)
        return pb.ListPendingResponse(approvals=[self._proto(a) for a in pending])

    async def WatchPending(
        self, request: pb.WatchPendingRequest, context: Context
    ) -> AsyncIterator[pb.WatchPendingResponse]:
        try:
            async for change in self._approvals.watch(current_workload()):
                yield pb.WatchPendingResponse(
                    approval=approval_proto(change.approval, change.state)
                )
        except TaskpassError as error:
            await abort_with(context, error)

    async def Approve(self, request: pb.ApproveRequest, context: Context) -> pb.Approval:
        try:
            approved = await self._approvals.approve(
                current_workload(), _approval_id(request.approval_id), comment=request.comment
            )
        except TaskpassError as error:
            await abort_with(context, error)
        return self._proto(approved)

    async def Deny(self, request: pb.DenyRequest, context: Context) -> pb.Approval:
        try:
            denied = await self._approvals.deny(
                current_workload(), _approval_id(request.approval_id), reason=request.reason
            )
        except TaskpassError as error:
            await abort_with(context, error)
        return self._proto(denied)

    async def Get(self, request: pb.GetApprovalRequest, context: Context) -> pb.Approval:
        try:
            approval = await self._approvals.get(
                current_workload(), _approval_id(request.approval_id)
            )
        except TaskpassError as error:
            await abort_with(context, error)
        return self._proto(approval)
