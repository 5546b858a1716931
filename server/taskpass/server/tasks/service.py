"""The task lifecycle: decide, issue and record a credential; complete a task; introspect a token.

This is the domain core of the exchange. It knows nothing about gRPC: the caller has already
attested the workload, and errors are taskpass errors.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from taskpass.server.approvals.service import Approvals
from taskpass.server.clock import Clock
from taskpass.server.delegation import service as delegation
from taskpass.server.delegation.chain import Hop
from taskpass.server.errors import (
    ApprovalRequired,
    InvalidRequest,
    PermissionDenied,
    PolicyDenied,
    ResourceExhausted,
    printable,
)
from taskpass.server.identity.workload import Workload
from taskpass.server.issuer.tokens import IssuedCredential, TokenIssuer
from taskpass.server.issuer.verify import TokenVerifier
from taskpass.server.policy.decision import Decision, Outcome
from taskpass.server.policy.engine import PolicyEngine
from taskpass.server.policy.request import PolicyRequest
from taskpass.server.revocation.service import RevocationService
from taskpass.server.store.base import Store, approver_banned, reused_task
from taskpass.server.store.records import (
    ApprovalRecord,
    ApprovalState,
    AuditEntry,
    CredentialRecord,
    TaskRecord,
)
from taskpass.server.tasks.described import DescribedTask
from taskpass.server.tasks.descriptor import TaskDescriptor

MAX_SHOWN = 256
"""Characters of a caller-supplied name quoted back in an error (they go into gRPC metadata)."""


class Decider(Protocol):
    """What the exchange needs of a policy engine (a PolicyEngine, or one wrapped to be timed)."""

    def decide(self, request: PolicyRequest) -> Decision: ...


class PolicySource(Protocol):
    """Where the policy in force comes from (a file now; signed, reloadable documents later)."""

    def current(self) -> Decider: ...


class StaticPolicy:
    def __init__(self, engine: PolicyEngine) -> None:
        self._engine = engine

    def current(self) -> PolicyEngine:
        return self._engine


MAX_APPROVAL_WAIT = dt.timedelta(hours=1)
MAX_WAITING_PER_WORKLOAD = 20
"""Exchanges one workload may have waiting for an approver at once: each holds a call and a
task on the server for up to MAX_APPROVAL_WAIT."""


@dataclass(frozen=True, slots=True)
class Exchanged:
    credential: IssuedCredential
    decision: Decision
    decision_id: str
    approval_id: str | None = None


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


def _parent_jti(hop: Hop | None) -> str | None:
    """What an approval of this exchange is bound to besides the task: the parent credential."""
    return None if hop is None else hop.parent.jti


def new_decision_id() -> str:
    return "dec_" + secrets.token_urlsafe(12)


def _decision_audit(
    decision_id: str, workload: Workload, task: DescribedTask, decision: Decision
) -> dict[str, object]:
    return {
        "decision_id": decision_id,
        "workload": _workload_audit(workload),
        "task": task.fields,
        "outcome": decision.outcome.value,
        "policy_version": decision.policy_version,
        "matched_rules": list(decision.matched_rules),
        "reason": decision.reason,
    }


class TaskService:
    def __init__(
        self,
        *,
        policy: PolicySource,
        issuer: TokenIssuer,
        verifier: TokenVerifier,
        store: Store,
        clock: Clock,
        approvals: Approvals | None = None,
        revocation: RevocationService | None = None,
        is_orchestrator: Callable[[str], bool] = lambda _: False,
        delegation_planner: delegation.Delegation | None = None,
    ) -> None:
        """Without `approvals`, a pending decision is answered ApprovalRequired with no
        approval id and nothing to wait for (tests of the exchange alone). Without
        `revocation`, no identity is banned and completions announce no event."""
        self._policy = policy
        self._issuer = issuer
        self._verifier = verifier
        self._store = store
        self._clock = clock
        self._approvals = approvals
        self._revocation = revocation
        self._is_orchestrator = is_orchestrator
        self._waiting: dict[str, int] = {}  # exchanges waiting for an approver, per workload
        self._delegation = delegation_planner or delegation.Delegation(
            verifier=verifier, store=store, bans=revocation.bans if revocation else None
        )

    async def exchange(
        self,
        workload: Workload,
        task: TaskDescriptor,
        *,
        wait_for_approval: dt.timedelta | None = None,
        subject_token: str = "",
        scopes: Sequence[str] = (),
    ) -> Exchanged:
        """Decide, and on allow sign a credential and make it durable before returning it.

        A pending decision becomes an approval request (or finds the one asked for before);
        with `wait_for_approval` the call waits up to that long for an approver, and completes
        as soon as one decides. An approved request is used once, for this exact task.

        With `subject_token` (a parent credential) this is a delegation (RFC 8693): `workload`
        acts under it, for at most `scopes` of it (all of them when empty); see delegation/.
        """
        if wait_for_approval is not None and not (
            dt.timedelta(0) <= wait_for_approval <= MAX_APPROVAL_WAIT
        ):
            raise InvalidRequest(
                "wait_for_approval_seconds",
                f"must be at most {int(MAX_APPROVAL_WAIT.total_seconds())}",
            )
        if scopes and not subject_token:
            raise InvalidRequest("scopes", "narrow scopes only when delegating (subject_token)")
        if self._revocation is not None:
            await self._revocation.admit(workload)  # a banned identity gets nothing
        now = self._clock.now()
        hop = None
        if subject_token:
            hop = await self._delegation.plan(
                workload, task, subject_token=subject_token, scopes=scopes, now=now
            )
        decision = self._decide(workload, task, now, hop)
        decision_id = new_decision_id()
        described = DescribedTask.of(task)
        decided = _decision_audit(decision_id, workload, described, decision)
        if hop is not None:
            decided["delegation"] = delegation.audit(hop)
        if decision.outcome is Outcome.ALLOW:
            return await self._issue(
                workload, task, described, decision, decision_id, decided, now=now, hop=hop
            )

        approval = None
        if decision.outcome is Outcome.PENDING_APPROVAL and self._approvals is not None:
            await self._check_task_can_be_issued(workload, task)
            approval = await self._approvals.request(
                workload, task, decision, decision_id, parent_jti=_parent_jti(hop)
            )
            decided["approval_id"] = approval.approval_id
        await self._store.audit.append(
            AuditEntry(kind="decision", actor=workload.id, at=now, payload=decided)
        )
        if decision.outcome is Outcome.DENY:
            raise PolicyDenied(
                decision.reason or "denied by policy",
                decision_id=decision_id,
                matched_rules=decision.matched_rules,
            )
        if approval is None:
            raise ApprovalRequired(
                decision_id=decision_id,
                rules=decision.approval_rules,
                approver_groups=decision.approver_groups,
            )
        return await self._exchange_approved(
            workload, task, decision, decision_id, approval, wait_for_approval, hop
        )

    def _decide(
        self,
        workload: Workload,
        task: TaskDescriptor,
        now: dt.datetime,
        hop: Hop | None,
        satisfied_approvals: frozenset[str] = frozenset(),
    ) -> Decision:
        """The policy's decision; for a delegation, held inside the parent credential."""
        decision = self._policy.current().decide(
            delegation.policy_request(workload, task, now, hop, satisfied_approvals)
        )
        return decision if hop is None else delegation.narrow(decision, hop, now)

    async def _exchange_approved(
        self,
        workload: Workload,
        task: TaskDescriptor,
        decision: Decision,
        decision_id: str,
        approval: ApprovalRecord,
        wait: dt.timedelta | None,
        hop: Hop | None = None,
    ) -> Exchanged:
        """Wait for the approval if asked, then use it once for this task."""
        assert self._approvals is not None
        if wait and approval.effective_state(self._clock.now()) is ApprovalState.PENDING:
            approval = await self._wait_for(workload, approval, wait)
        state = approval.effective_state(self._clock.now())
        if state is ApprovalState.DENIED:
            raise PermissionDenied(
                f"approval {approval.approval_id} for this task was denied by "
                f"{approval.decided_by}: {approval.reason} (a denial is final for this task; "
                "a new task needs a new task_id)",
                details={"approval_id": approval.approval_id, "decision_id": decision_id},
            )
        if state is not ApprovalState.APPROVED:
            raise ApprovalRequired(
                decision_id=decision_id,
                rules=decision.approval_rules,
                approver_groups=decision.approver_groups,
                approval_id=approval.approval_id,
            )
        approver = approval.decided_by or ""
        if self._revocation is not None and self._revocation.bans.banned(approver):
            raise approver_banned(approval.approval_id, approver)  # (PostgreSQL checks again)
        now = self._clock.now()
        satisfied = self._approvals.satisfied_by(approval)
        regranted = self._decide(workload, task, now, hop, satisfied)
        if regranted.outcome is Outcome.DENY:
            raise PolicyDenied(
                regranted.reason or "denied by policy",
                decision_id=decision_id,
                matched_rules=regranted.matched_rules,
            )
        if regranted.outcome is Outcome.PENDING_APPROVAL:  # the policy changed since: see below
            raise PermissionDenied(
                f"approval {approval.approval_id} by {approval.decided_by} does not satisfy "
                f"rule(s) {', '.join(regranted.approval_rules)} of the policy in force, which "
                f"need a member of {', '.join(regranted.approver_groups)}; a new approval needs "
                "a new task_id",
                details={"approval_id": approval.approval_id, "decision_id": decision_id},
            )
        consumed, regranted = await self._approvals.consume(
            approval, workload, task, regranted, decision_id, parent_jti=_parent_jti(hop)
        )
        described = DescribedTask.of(task)
        decided = _decision_audit(decision_id, workload, described, regranted)
        decided["approval_id"] = consumed.approval_id
        decided["approved_by"] = consumed.decided_by
        if hop is not None:
            decided["delegation"] = delegation.audit(hop)
        return await self._issue(
            workload,
            task,
            described,
            regranted,
            decision_id,
            decided,
            now=now,
            approval_id=consumed.approval_id,
            hop=hop,
        )

    async def _wait_for(
        self, workload: Workload, approval: ApprovalRecord, wait: dt.timedelta
    ) -> ApprovalRecord:
        assert self._approvals is not None
        waiting = self._waiting.get(workload.id, 0)
        if waiting >= MAX_WAITING_PER_WORKLOAD:
            raise ResourceExhausted(
                f"{workload.id} already has {waiting} exchanges waiting for approval, the most "
                f"it may have; ask again without waiting (approval {approval.approval_id} is "
                "pending) or wait for one of them to end"
            )
        self._waiting[workload.id] = waiting + 1
        try:
            return await self._approvals.wait(approval.approval_id, wait)
        finally:
            left = self._waiting[workload.id] - 1
            if left:
                self._waiting[workload.id] = left
            else:
                del self._waiting[workload.id]

    async def _check_task_can_be_issued(self, workload: Workload, task: TaskDescriptor) -> None:
        """Refuse before any approver is asked what could never be issued afterwards."""
        known = await self._store.credentials.get_task(workload.id, task.task_id)
        if known is None:
            return
        conflict = reused_task(known, digest=task.digest(), completed_at=known.completed_at)
        if conflict is not None:
            raise conflict

    async def _issue(
        self,
        workload: Workload,
        task: TaskDescriptor,
        described: DescribedTask,
        decision: Decision,
        decision_id: str,
        decided: dict[str, object],
        *,
        now: dt.datetime,
        approval_id: str | None = None,
        hop: Hop | None = None,
    ) -> Exchanged:
        credential = self._issuer.issue(
            workload=delegation.bound(workload, hop),
            task=task,
            decision=decision,
            approval_id=approval_id,
            actor=None if hop is None else hop.actor,
            subject=None if hop is None else hop.subject,
        )
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
            approval_id=approval_id,
            parent_jti=None if hop is None else hop.parent.jti,
            revoked_at=None,
            revoke_reason="",
        )
        issued = {**decided, "jti": credential.jti, "expires_at": credential.expires_at.isoformat()}
        await self._store.credentials.record_issuance(
            task=TaskRecord(
                requester=workload.id,
                task_id=task.task_id,
                digest=described.digest,
                descriptor=described.fields,
                created_at=now,
                completed_at=None,
            ),
            credential=record,
            audit=AuditEntry(kind="issuance", actor=workload.id, at=now, payload=issued),
        )
        if self._revocation is not None:
            await self._revocation.recheck_issued(workload, record)  # a ban may have landed
        return Exchanged(
            credential=credential,
            decision=decision,
            decision_id=decision_id,
            approval_id=approval_id,
        )

    async def complete(
        self, workload: Workload, task_id: str, *, requester: str | None = None
    ) -> list[str]:
        """End a task: every credential of it is revoked. Returns the revoked jtis.

        The caller completes its own task, or, with `requester`, a task whose descriptor named the
        caller as its orchestrator, when the caller is also in the `orchestrators` group.
        """
        now = self._clock.now()
        owner = requester or workload.id
        if owner != workload.id:
            await self._check_orchestrator(workload, owner, task_id)
        event = cascade = None
        if self._revocation is not None:
            event = self._revocation.task_completed(requester=owner, task_id=task_id, at=now)
            cascade = self._revocation.cascade(at=now)  # the task's delegated descendants
        revoked, stored = await self._store.credentials.complete_task(
            requester=owner,
            task_id=task_id,
            at=now,
            audit=AuditEntry(
                kind="task_completed",
                actor=workload.id,
                at=now,
                payload={
                    "workload": _workload_audit(workload),
                    "requester": owner,
                    "task_id": task_id,
                },
            ),
            event=event,
            cascade=cascade,
        )
        if self._revocation is not None:
            self._revocation.published(stored, cascade)  # durable: now tell the subscribers
        return [c.jti for c in revoked]

    async def introspect(self, token: str) -> Introspection:
        """Active only when the signature checks, the token is unexpired and not revoked. Any
        attested workload may ask about a token it holds: whoever holds a JWT can read its
        claims anyway; this adds whether it is still good (and tokens cannot be guessed)."""
        claims = self._verifier.verify(token)
        if claims is None:
            return Introspection(active=False, claims={})
        jti = claims.get("jti")
        record = await self._store.credentials.get_credential(jti) if isinstance(jti, str) else None
        if record is None or record.revoked_at is not None:
            return Introspection(active=False, claims={})
        return Introspection(active=True, claims=claims)

    async def _check_orchestrator(self, workload: Workload, requester: str, task_id: str) -> None:
        task = await self._store.credentials.get_task(requester, task_id)
        declared = task.descriptor.get("orchestrator") if task is not None else None
        if declared != workload.id or not self._is_orchestrator(workload.id):
            # The same answer whether or not the task exists: no probing of others' task ids.
            raise PermissionDenied(
                f"{workload.id} may not complete task {task_id!r} of "
                f"{printable(requester[:MAX_SHOWN])}: only the "
                "requester, or the orchestrator its task descriptor names (and which is in the "
                "orchestrators group), may complete it"
            )
