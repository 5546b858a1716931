"""The task lifecycle: decide, issue and record a credential; complete a task; introspect a token.

This is the domain core of the exchange. It knows nothing about gRPC: the caller has already
attested the workload, and errors are taskpass errors.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Protocol

from taskpass.server.clock import Clock
from taskpass.server.errors import ApprovalRequired, NotFound, PolicyDenied
from taskpass.server.identity.workload import Workload
from taskpass.server.issuer.tokens import IssuedCredential, TokenIssuer
from taskpass.server.issuer.verify import TokenVerifier
from taskpass.server.policy.decision import Decision, Outcome
from taskpass.server.policy.engine import PolicyEngine
from taskpass.server.policy.request import PolicyRequest
from taskpass.server.store.base import Store
from taskpass.server.store.records import AuditEntry, CredentialRecord, TaskRecord
from taskpass.server.tasks.descriptor import TaskDescriptor


class PolicySource(Protocol):
    """Where the policy in force comes from (a file now; signed, reloadable documents later)."""

    def current(self) -> PolicyEngine: ...


class StaticPolicy:
    def __init__(self, engine: PolicyEngine) -> None:
        self._engine = engine

    def current(self) -> PolicyEngine:
        return self._engine


@dataclass(frozen=True, slots=True)
class Exchanged:
    credential: IssuedCredential
    decision: Decision
    decision_id: str


@dataclass(frozen=True, slots=True)
class Introspection:
    """RFC 7662: `claims` is empty when `active` is false."""

    active: bool
    claims: dict[str, object]


def _workload_audit(workload: Workload) -> dict[str, object]:
    return {
        "id": workload.id,
        "method": workload.method.value,
        "cert_sha256": workload.cert_thumbprint,
    }


def new_decision_id() -> str:
    return "dec_" + secrets.token_urlsafe(12)


class TaskService:
    def __init__(
        self,
        *,
        policy: PolicySource,
        issuer: TokenIssuer,
        verifier: TokenVerifier,
        store: Store,
        clock: Clock,
    ) -> None:
        self._policy = policy
        self._issuer = issuer
        self._verifier = verifier
        self._store = store
        self._clock = clock

    async def exchange(self, workload: Workload, task: TaskDescriptor) -> Exchanged:
        """Decide, and on allow sign a credential and make it durable before returning it."""
        now = self._clock.now()
        decision = self._policy.current().decide(
            PolicyRequest(workload=workload, task=task, now=now)
        )
        decision_id = new_decision_id()
        decided = {
            "decision_id": decision_id,
            "workload": _workload_audit(workload),
            "task": task.as_dict(),
            "outcome": decision.outcome.value,
            "policy_version": decision.policy_version,
            "matched_rules": list(decision.matched_rules),
            "reason": decision.reason,
        }
        if decision.outcome is not Outcome.ALLOW:
            await self._store.audit.append(
                AuditEntry(kind="decision", actor=workload.id, at=now, payload=decided)
            )
            if decision.outcome is Outcome.DENY:
                raise PolicyDenied(
                    decision.reason or "denied by policy",
                    decision_id=decision_id,
                    matched_rules=decision.matched_rules,
                )
            raise ApprovalRequired(
                decision_id=decision_id,
                rules=decision.approval_rules,
                approver_groups=decision.approver_groups,
            )

        credential = self._issuer.issue(workload=workload, task=task, decision=decision)
        record = CredentialRecord(
            jti=credential.jti,
            requester=workload.id,
            task_id=task.task_id,
            audience=task.audience,
            scopes=credential.scopes,
            issued_at=credential.issued_at,
            expires_at=credential.expires_at,
            policy_version=decision.policy_version,
            kid=credential.kid,
            cert_thumbprint=workload.cert_thumbprint,
            approval_id=None,
            parent_jti=None,
            revoked_at=None,
            revoke_reason="",
        )
        issued = {**decided, "jti": credential.jti, "expires_at": credential.expires_at.isoformat()}
        await self._store.credentials.record_issuance(
            task=TaskRecord(
                requester=workload.id,
                task_id=task.task_id,
                digest=task.digest(),
                descriptor=task.as_dict(),
                created_at=now,
                completed_at=None,
            ),
            credential=record,
            audit=AuditEntry(kind="issuance", actor=workload.id, at=now, payload=issued),
        )
        return Exchanged(credential=credential, decision=decision, decision_id=decision_id)

    async def complete(self, workload: Workload, task_id: str) -> list[str]:
        """End the requester's task: every credential of it is revoked. Returns the revoked jtis."""
        now = self._clock.now()
        revoked, _event = await self._store.credentials.complete_task(
            requester=workload.id,
            task_id=task_id,
            at=now,
            audit=AuditEntry(
                kind="task_completed",
                actor=workload.id,
                at=now,
                payload={"workload": _workload_audit(workload), "task_id": task_id},
            ),
            event=None,
        )
        return [c.jti for c in revoked]

    async def introspect(self, token: str) -> Introspection:
        """Active only when the signature checks, the token is unexpired and not revoked."""
        claims = self._verifier.verify(token)
        if claims is None:
            return Introspection(active=False, claims={})
        jti = claims.get("jti")
        record = await self._store.credentials.get_credential(jti) if isinstance(jti, str) else None
        if record is None or record.revoked_at is not None:
            return Introspection(active=False, claims={})
        return Introspection(active=True, claims=claims)

    async def require_task(self, workload: Workload, task_id: str) -> TaskRecord:
        task = await self._store.credentials.get_task(workload.id, task_id)
        if task is None:
            raise NotFound(f"no task {task_id!r} for {workload.id}")
        return task
