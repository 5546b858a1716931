"""AdminService: LoadPolicy, GetPolicy (admins); ExportAudit, VerifyAudit (auditors, admins).

The groups are checked by the authorization interceptor before any handler runs; a denied
call is answered PERMISSION_DENIED and audited there (kind "access_denied").
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc

from taskpass._proto.v1 import admin_pb2 as pb
from taskpass._proto.v1 import admin_pb2_grpc as pb_grpc
from taskpass.server.api.authz import Access, current_workload
from taskpass.server.api.convert import datetime_from, timestamp
from taskpass.server.api.status import abort_with
from taskpass.server.audit.trail import AuditTrail
from taskpass.server.errors import InvalidRequest, TaskpassError
from taskpass.server.issuer.keys import KeyState, SigningKey
from taskpass.server.issuer.rotation import KeyRotation
from taskpass.server.policy.source import LoadedPolicy, ReloadablePolicy
from taskpass.server.store.audit_chain import Head, canonical_json
from taskpass.server.store.records import AuditRecord

Context = grpc.aio.ServicerContext[Any, Any]

ADMINS = "admins"
AUDITORS = "auditors"
SERVICE = pb.DESCRIPTOR.services_by_name["AdminService"].full_name
AUTHORIZATION: dict[str, Access] = {
    f"/{SERVICE}/LoadPolicy": Access.members_of(ADMINS),
    f"/{SERVICE}/GetPolicy": Access.members_of(ADMINS),
    f"/{SERVICE}/ExportAudit": Access.members_of(AUDITORS, ADMINS),
    f"/{SERVICE}/VerifyAudit": Access.members_of(AUDITORS, ADMINS),
    f"/{SERVICE}/RotateSigningKey": Access.members_of(ADMINS),
    f"/{SERVICE}/ListSigningKeys": Access.members_of(ADMINS, AUDITORS),
}


def _policy_info(loaded: LoadedPolicy) -> pb.PolicyInfo:
    document = loaded.engine.document
    return pb.PolicyInfo(
        version=loaded.version,
        label=document.version_label,
        rule_count=len(document.rules),
        signer=loaded.signer or "",
        source=loaded.source,
        loaded_by=loaded.loaded_by,
        loaded_at=timestamp(loaded.loaded_at),
    )


def _record_proto(record: AuditRecord) -> pb.AuditRecord:
    return pb.AuditRecord(
        seq=record.seq,
        kind=record.kind,
        actor=record.actor,
        at=timestamp(record.at),
        payload_json=canonical_json(record.payload),
        prev_hash=record.prev_hash,
        hash=record.hash,
    )


def _key_info(rotation: KeyRotation, key: SigningKey) -> pb.SigningKeyInfo:
    info = pb.SigningKeyInfo(
        kid=key.kid, alg=key.alg, state=key.state.value, created_at=timestamp(key.created_at)
    )
    if key.state is KeyState.NEXT:
        info.signs_from.CopyFrom(timestamp(rotation.signs_from(key)))
    if key.retired_at is not None:
        info.retired_at.CopyFrom(timestamp(key.retired_at))
    if key.state is KeyState.RETIRED and key.max_token_expiry is not None:
        info.published_until.CopyFrom(timestamp(key.max_token_expiry))
    return info


MAX_SEQ = 2**63 - 1


def _since(request: pb.ExportAuditRequest) -> dt.datetime | None:
    if not request.HasField("since"):
        return None
    return datetime_from(request.since, "since")


class AdminServicer(pb_grpc.AdminServiceServicer):
    def __init__(
        self, *, policy: ReloadablePolicy, audit: AuditTrail, rotation: KeyRotation
    ) -> None:
        self._policy = policy
        self._audit = audit
        self._rotation = rotation

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_AdminServiceServicer_to_server(self, server)

    async def LoadPolicy(
        self, request: pb.LoadPolicyRequest, context: Context
    ) -> pb.LoadPolicyResponse:
        try:
            if not request.document:
                raise InvalidRequest("document", "is required: the policy file's exact bytes")
            previous = self._policy.loaded.version
            loaded = await self._policy.load(
                request.document, request.signature or None, by=current_workload()
            )
        except TaskpassError as error:
            await abort_with(context, error)
        return pb.LoadPolicyResponse(policy=_policy_info(loaded), previous_version=previous)

    async def GetPolicy(
        self, request: pb.GetPolicyRequest, context: Context
    ) -> pb.GetPolicyResponse:
        loaded = self._policy.loaded
        return pb.GetPolicyResponse(policy=_policy_info(loaded), document=loaded.document)

    async def ExportAudit(
        self, request: pb.ExportAuditRequest, context: Context
    ) -> AsyncIterator[pb.AuditRecord]:
        try:
            since = _since(request)
            if request.after_seq > MAX_SEQ:  # a uint64 on the wire; the store's seqs are int64
                raise InvalidRequest("after_seq", f"must be at most {MAX_SEQ}")
            async for record in self._audit.export(after_seq=request.after_seq, since=since):
                yield _record_proto(record)
        except TaskpassError as error:
            await abort_with(context, error)

    async def VerifyAudit(
        self, request: pb.VerifyAuditRequest, context: Context
    ) -> pb.VerifyAuditResponse:
        try:
            result = await self._audit.verify(_expected_head(request))
        except TaskpassError as error:
            await abort_with(context, error)
        return pb.VerifyAuditResponse(
            ok=result.ok,
            checked=result.checked,
            last_seq=result.last_seq,
            last_hash=result.last_hash,
            problem=result.problem.value if result.problem else "",
            bad_seq=result.seq or 0,
            message=result.message,
        )

    async def RotateSigningKey(
        self, request: pb.RotateSigningKeyRequest, context: Context
    ) -> pb.RotateSigningKeyResponse:
        try:
            started = await self._rotation.begin(by=current_workload().id)
        except TaskpassError as error:
            await abort_with(context, error)
        upcoming = next(k for k in self._rotation.keys.signing_keys() if k.kid == started.next_kid)
        return pb.RotateSigningKeyResponse(next=_key_info(self._rotation, upcoming))

    async def ListSigningKeys(
        self, request: pb.ListSigningKeysRequest, context: Context
    ) -> pb.ListSigningKeysResponse:
        keys = self._rotation.keys.signing_keys()
        return pb.ListSigningKeysResponse(keys=[_key_info(self._rotation, k) for k in keys])


_HASH = re.compile(r"[0-9a-f]{64}")


def _expected_head(request: pb.VerifyAuditRequest) -> Head | None:
    if not request.expect_seq and not request.expect_hash:
        return None
    if not request.expect_seq or not _HASH.fullmatch(request.expect_hash):
        raise InvalidRequest(
            "expect",
            "an expected head is a seq above 0 and its 64 hex digit hash, as `audit verify` "
            "prints it and the server logs it",
        )
    return Head(seq=request.expect_seq, hash=request.expect_hash)
