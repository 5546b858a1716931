"""The security team's SDK: load and read the signed policy, export and verify the audit log.

async with TaskpassClient.from_files(...) as client:      # an admin or auditor SVID
    admin = AdminClient.over(client)
    report = await admin.verify_audit()
    async for record in admin.export_audit(since=yesterday):
        ...
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from taskpass._proto.v1 import admin_pb2 as pb
from taskpass._proto.v1 import admin_pb2_grpc as pb_grpc
from taskpass.client.client import TaskpassClient
from taskpass.client.errors import from_rpc_error
from taskpass.client.timestamps import from_timestamp


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    version: str
    """The content hash every decision and credential records."""
    label: str
    rule_count: int
    signer: str
    """Key id of the signer that verified it; empty when accepted unsigned (dev mode)."""
    source: str
    loaded_by: str
    loaded_at: dt.datetime

    @classmethod
    def from_proto(cls, m: pb.PolicyInfo) -> PolicyInfo:
        return cls(
            version=m.version,
            label=m.label,
            rule_count=m.rule_count,
            signer=m.signer,
            source=m.source,
            loaded_by=m.loaded_by,
            loaded_at=from_timestamp(m.loaded_at),
        )

    def as_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "label": self.label,
            "rule_count": self.rule_count,
            "signer": self.signer or None,
            "source": self.source,
            "loaded_by": self.loaded_by,
            "loaded_at": self.loaded_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit record exactly as chained: `payload_json` is the canonical JSON that was hashed."""

    seq: int
    kind: str
    actor: str
    at: dt.datetime
    payload_json: str
    prev_hash: str
    hash: str

    @property
    def payload(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.payload_json)
        return value

    def as_json(self) -> dict[str, object]:
        """One JSON line of `taskpass audit export`."""
        return {
            "seq": self.seq,
            "kind": self.kind,
            "actor": self.actor,
            "at": self.at.isoformat(),
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class AuditVerification:
    ok: bool
    checked: int
    last_seq: int
    last_hash: str
    problem: str
    """seq_gap | seq_order | broken_link | hash_mismatch | cut_off | head_mismatch, or empty
    when ok."""
    bad_seq: int
    message: str


@dataclass(frozen=True, slots=True)
class SigningKeyInfo:
    """One of the server's signing keys: next (published, not signing yet), active, retired."""

    kid: str
    alg: str
    state: str
    created_at: dt.datetime
    signs_from: dt.datetime | None
    retired_at: dt.datetime | None
    published_until: dt.datetime | None

    @classmethod
    def from_proto(cls, m: pb.SigningKeyInfo) -> SigningKeyInfo:
        return cls(
            kid=m.kid,
            alg=m.alg,
            state=m.state,
            created_at=from_timestamp(m.created_at),
            signs_from=from_timestamp(m.signs_from) if m.HasField("signs_from") else None,
            retired_at=from_timestamp(m.retired_at) if m.HasField("retired_at") else None,
            published_until=(
                from_timestamp(m.published_until) if m.HasField("published_until") else None
            ),
        )

    def as_json(self) -> dict[str, object]:
        def text(value: dt.datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "kid": self.kid,
            "alg": self.alg,
            "state": self.state,
            "created_at": text(self.created_at),
            "signs_from": text(self.signs_from),
            "retired_at": text(self.retired_at),
            "published_until": text(self.published_until),
        }


class AdminClient:
    """AdminService over a channel (share a TaskpassClient's with `over`)."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float = 10.0) -> None:
        self._stub = pb_grpc.AdminServiceStub(channel)
        self._timeout = timeout

    @classmethod
    def over(cls, client: TaskpassClient) -> AdminClient:
        return cls(client.channel, timeout=client.timeout)

    async def load_policy(self, document: bytes, signature: bytes | None) -> tuple[PolicyInfo, str]:
        """Replace the policy in force; returns it and the previous version. A document no
        configured signer verifies is refused (InvalidRequest) and the old one stays."""
        request = pb.LoadPolicyRequest(document=document, signature=signature or b"")
        try:
            response = await self._stub.LoadPolicy(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return PolicyInfo.from_proto(response.policy), response.previous_version

    async def get_policy(self) -> tuple[PolicyInfo, bytes]:
        try:
            response = await self._stub.GetPolicy(pb.GetPolicyRequest(), timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return PolicyInfo.from_proto(response.policy), response.document

    async def export_audit(
        self, *, after_seq: int = 0, since: dt.datetime | None = None
    ) -> AsyncIterator[AuditRecord]:
        """Records after `after_seq` (and at or after `since`), oldest first, to the end."""
        request = pb.ExportAuditRequest(after_seq=after_seq)
        if since is not None:
            request.since.FromDatetime(since.astimezone(dt.UTC))
        call = self._stub.ExportAudit(request)
        try:
            async for m in call:
                yield AuditRecord(
                    seq=m.seq,
                    kind=m.kind,
                    actor=m.actor,
                    at=from_timestamp(m.at),
                    payload_json=m.payload_json,
                    prev_hash=m.prev_hash,
                    hash=m.hash,
                )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()

    async def verify_audit(self, expect: tuple[int, str] | None = None) -> AuditVerification:
        """Check the whole chain on the server; reports the first bad record. `expect`: a head
        (seq, hash) kept from an earlier check or the server's log, which the log must still
        pass through (so records rewritten or cut off since are found)."""
        seq, digest = expect or (0, "")
        request = pb.VerifyAuditRequest(expect_seq=seq, expect_hash=digest)
        try:
            r = await self._stub.VerifyAudit(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return AuditVerification(
            ok=r.ok,
            checked=r.checked,
            last_seq=r.last_seq,
            last_hash=r.last_hash,
            problem=r.problem,
            bad_seq=r.bad_seq,
            message=r.message,
        )

    async def rotate_signing_key(self) -> SigningKeyInfo:
        """Publish a new signing key; it signs from `signs_from` on (admins)."""
        try:
            r = await self._stub.RotateSigningKey(
                pb.RotateSigningKeyRequest(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return SigningKeyInfo.from_proto(r.next)

    async def list_signing_keys(self) -> list[SigningKeyInfo]:
        try:
            r = await self._stub.ListSigningKeys(pb.ListSigningKeysRequest(), timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return [SigningKeyInfo.from_proto(k) for k in r.keys]
