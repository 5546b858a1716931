"""The async client: one channel, typed calls, typed errors."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from taskpass._proto.v1 import credential_pb2 as pb
from taskpass._proto.v1 import credential_pb2_grpc as pb_grpc
from taskpass.client.clock import Clock
from taskpass.client.errors import InvalidRequest, from_rpc_error
from taskpass.client.jwks import parse_document
from taskpass.client.models import SENSITIVITIES, Introspection, Task, TaskCredential
from taskpass.client.task_handle import TaskHandle, check_delegation
from taskpass.client.timestamps import from_timestamp

_SENSITIVITY = {
    "public": pb.SENSITIVITY_PUBLIC,
    "internal": pb.SENSITIVITY_INTERNAL,
    "confidential": pb.SENSITIVITY_CONFIDENTIAL,
    "restricted": pb.SENSITIVITY_RESTRICTED,
}


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc.strerror}") from exc


def _identity(cert: str | Path, key: str | Path) -> tuple[bytes, bytes]:
    """The PEM chain and key of an mTLS identity, once checked that the key is the first
    certificate's: grpc would only log its own errors and fail the handshake."""
    chain, private = _read(cert), _read(key)
    try:
        leaf = x509.load_pem_x509_certificate(chain)  # the first certificate of the chain
    except ValueError as exc:
        raise InvalidRequest(f"{cert} holds no PEM certificate") from exc
    try:
        own = serialization.load_pem_private_key(private, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"{key} holds no unencrypted PEM private key") from exc
    if _spki(own.public_key()) != _spki(leaf.public_key()):
        raise InvalidRequest(
            f"the key in {key} does not belong to the certificate in {cert}: "
            "pass the key that was issued with it"
        )
    return chain, private


def _spki(public: Any) -> bytes:
    return bytes(
        public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _task_proto(task: Task) -> pb.TaskDescriptor:
    sensitivity = _SENSITIVITY.get(task.sensitivity.lower())
    if sensitivity is None:
        raise InvalidRequest(
            f"task.sensitivity: must be one of {', '.join(SENSITIVITIES)}",
            details={"field": "task.sensitivity"},
        )
    message = pb.TaskDescriptor(
        task_id=task.task_id,
        audience=task.audience,
        action=task.action,
        tool=task.tool,
        sensitivity=sensitivity,
        environment=task.environment,
        requested_ttl_seconds=max(0, int(task.ttl.total_seconds())),
        reason=task.reason,
        attributes=dict(task.attributes),
        orchestrator=task.orchestrator,
    )
    if task.deadline is not None:
        message.deadline.FromDatetime(task.deadline.astimezone(dt.UTC))
    return message


class TaskpassClient:
    """Talks to a taskpass server over an injected channel.

    Build one with `from_files` (mTLS with an X.509-SVID) or `with_jwt_svid` (server TLS plus a
    JWT-SVID bearer), or from a SPIRE agent with `taskpass.client.workload_api.from_workload_api`.
    Use it as an async context manager, or call `aclose()`.
    """

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float = 10.0) -> None:
        self._channel = channel
        self._timeout = timeout
        self._credentials = pb_grpc.CredentialServiceStub(channel)

    @classmethod
    def from_files(
        cls,
        target: str,
        *,
        ca: str | Path,
        cert: str | Path,
        key: str | Path,
        server_name: str | None = None,
        timeout: float = 10.0,
    ) -> TaskpassClient:
        chain, private = _identity(cert, key)
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(ca), private_key=private, certificate_chain=chain
        )
        return cls(grpc.aio.secure_channel(target, creds, _options(server_name)), timeout=timeout)

    @classmethod
    def with_jwt_svid(
        cls,
        target: str,
        *,
        ca: str | Path,
        token: str,
        server_name: str | None = None,
        timeout: float = 10.0,
    ) -> TaskpassClient:
        creds = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(root_certificates=_read(ca)),
            grpc.access_token_call_credentials(token),
        )
        return cls(grpc.aio.secure_channel(target, creds, _options(server_name)), timeout=timeout)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel, for the SDK's other service clients (revocation watcher, admin)."""
        return self._channel

    @property
    def timeout(self) -> float:
        """Seconds allowed per unary call."""
        return self._timeout

    async def __aenter__(self) -> TaskpassClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._channel.close(grace=None)

    async def exchange(
        self,
        task: Task,
        *,
        wait_for_approval: dt.timedelta | None = None,
        on_behalf_of: str | None = None,
        scopes: Sequence[str] = (),
    ) -> TaskCredential:
        """Ask for a credential for `task`; raises Denied, ApprovalPending, InvalidRequest, ...

        When policy wants an approval, ApprovalPending carries the approval id at once; with
        `wait_for_approval` the server waits up to that long (at most an hour) and the call
        returns as soon as an approver decides: the credential, or Denied-by-approver
        (PermissionDenied). Asking again for the same task finds the same approval request.

        Delegation (RFC 8693): `on_behalf_of` is the parent agent's token; the credential you get
        is your own (bound to your certificate), for the parent's task (same task_id and
        audience), at most `scopes` of the parent's (all the policy allows when empty), and
        never outliving it. Its `act` claim names every hop.
        """
        check_delegation(on_behalf_of, scopes)
        wait = 0
        if wait_for_approval is not None:
            wait = max(0, int(wait_for_approval.total_seconds()))
        request = pb.ExchangeRequest(
            task=_task_proto(task),
            wait_for_approval_seconds=wait,
            subject_token=on_behalf_of or "",
            scopes=list(scopes),
        )
        try:
            response = await self._credentials.Exchange(request, timeout=self._timeout + wait)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        cred, decision = response.credential, response.decision
        return TaskCredential(
            token=cred.token,
            jti=cred.jti,
            issued_at=from_timestamp(cred.issued_at),
            expires_at=from_timestamp(cred.expires_at),
            scopes=tuple(cred.scopes),
            decision_id=decision.decision_id,
            policy_version=decision.policy_version,
            matched_rules=tuple(decision.matched_rules),
            approval_id=decision.approval_id,
        )

    async def complete_task(self, task_id: str, *, requester: str = "") -> tuple[str, ...]:
        """End the task: every credential issued for it is revoked. Returns their jtis.

        `requester` completes another workload's task, as the orchestrator its task named.
        """
        try:
            response = await self._credentials.CompleteTask(
                pb.CompleteTaskRequest(task_id=task_id, requester=requester), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return tuple(response.revoked_jtis)

    async def introspect(self, token: str) -> Introspection:
        try:
            r = await self._credentials.Introspect(
                pb.IntrospectRequest(token=token), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        if not r.active:
            return Introspection(active=False, claims={})
        claims: dict[str, object] = {
            "iss": r.iss,
            "sub": r.sub,
            "client_id": r.client_id,
            "aud": r.aud,
            "scope": r.scope,
            "jti": r.jti,
            "txn": r.txn,
            "iat": r.iat,
            "exp": r.exp,
            "token_type": r.token_type,
        }
        if r.cnf_x5t_s256:  # RFC 7662 / 8705 shapes
            claims["cnf"] = {"x5t#S256": r.cnf_x5t_s256}
        if r.act_sub:
            claims["act"] = {"sub": r.act_sub}
        return Introspection(active=True, claims=claims)

    async def jwks(self) -> dict[str, Any]:
        """The server's JWK Set; Unavailable if its reply is not a JSON object."""
        try:
            r = await self._credentials.GetJwks(pb.GetJwksRequest(), timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return parse_document(r.jwks_json, source="the GetJwks RPC")

    def task(
        self,
        task_id: str,
        *,
        audience: str,
        action: str,
        sensitivity: str = "internal",
        ttl: dt.timedelta = dt.timedelta(minutes=10),
        tool: str = "",
        environment: str = "",
        deadline: dt.datetime | None = None,
        reason: str = "",
        attributes: Mapping[str, str] | None = None,
        refresh_below: float = 0.25,
        wait_for_approval: dt.timedelta | None = None,
        on_behalf_of: str | None = None,
        scopes: Sequence[str] = (),
        clock: Clock | None = None,
    ) -> TaskHandle:
        """`async with client.task(...) as task:` exchange on entry, CompleteTask on exit (also
        when the body raises); `await task.credential()` re-exchanges near expiry. See
        TaskHandle for `refresh_below` and `wait_for_approval`.

        A sub-agent passes its parent's token as `on_behalf_of` (and optionally `scopes`, at
        most the parent's), as for `exchange`: the entry exchange and every refresh are then
        delegations under that same parent token, and exit completes the sub-agent's own task
        (the parent's credentials stay valid)."""
        descriptor = Task(
            task_id=task_id,
            audience=audience,
            action=action,
            sensitivity=sensitivity,
            ttl=ttl,
            tool=tool,
            environment=environment,
            deadline=deadline,
            reason=reason,
            attributes=dict(attributes or {}),
        )
        return TaskHandle(
            self,
            descriptor,
            refresh_below=refresh_below,
            wait_for_approval=wait_for_approval,
            on_behalf_of=on_behalf_of,
            scopes=scopes,
            clock=clock,
        )


def _options(server_name: str | None) -> list[tuple[str, Any]]:
    return [("grpc.ssl_target_name_override", server_name)] if server_name else []
