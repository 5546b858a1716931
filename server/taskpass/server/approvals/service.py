"""The approval desk: requests from pending decisions, decisions by approvers, single-use grants.

Rules kept here (DESIGN.md "Security invariants", issue 3):
- a request is bound to the requester, the task digest, audience, action, scopes and TTL the
  approver is shown, and for a delegated exchange to the parent credential (its jti); its grant
  is usable once, by that requester, for that task, under that parent (or, if asked without
  one, without one), before expiry;
- only members of a group named by the approval rule may decide, and never the requester itself,
  whatever groups it is in; every refusal is audited;
- waiting exchanges and live watchers learn of a change at once (see signals.py).

No gRPC here: callers pass attested Workloads and get taskpass errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import secrets
from collections.abc import AsyncGenerator, Callable, Collection
from dataclasses import dataclass

from taskpass.server.approvals.signals import RESYNC, ApprovalSignals
from taskpass.server.clock import Clock
from taskpass.server.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
)
from taskpass.server.identity.groups import Groups
from taskpass.server.identity.workload import Workload
from taskpass.server.policy.decision import Decision, Outcome
from taskpass.server.revocation.bans import BanList
from taskpass.server.store.base import MAX_PAGE, PendingCursor, Store
from taskpass.server.store.records import (
    ApprovalRecord,
    ApprovalState,
    AuditEntry,
    JsonObject,
)
from taskpass.server.tasks.descriptor import TaskDescriptor

DEFAULT_TTL = dt.timedelta(minutes=15)
DEFAULT_RECHECK = dt.timedelta(seconds=5)
MAX_REASON = 1024
ID_PREFIX = "apr_"


def new_approval_id() -> str:
    return ID_PREFIX + secrets.token_urlsafe(12)


def workload_audit(workload: Workload) -> JsonObject:
    """Who, as every audit record names them: identity, attestation method, cert fingerprint."""
    return {
        "id": workload.id,
        "method": workload.method.value,
        "cert_sha256": workload.cert_thumbprint,
    }


def approval_audit(approval: ApprovalRecord) -> JsonObject:
    """What was (or is to be) approved, for the audit record of any change to it."""
    return {
        "approval_id": approval.approval_id,
        "requester": approval.requester,
        "task": approval.descriptor,
        "task_digest": approval.digest,
        "parent_jti": approval.parent_jti,
        "scopes": list(approval.scopes),
        "ttl_seconds": approval.ttl_seconds,
        "rules": list(approval.rules),
        "approver_groups": list(approval.approver_groups),
        "policy_version": approval.policy_version,
        "decision_id": approval.decision_id,
    }


@dataclass(frozen=True, slots=True)
class ApprovalChange:
    """One item of a watch: the approval as stored and its state at the time it was read."""

    approval: ApprovalRecord
    state: ApprovalState


ApproversOf = Callable[[str], frozenset[str] | None]
MAX_PENDING_PER_REQUESTER = 100
"""Live pending requests one workload may have: enough for any agent's parallel tasks, too few
to bury the approvers' queue (a request past it is RESOURCE_EXHAUSTED)."""
MAX_DELEGATION_WALK = 16
"""Parent credentials followed to find who a delegated request is made for (DEFAULT_MAX_DEPTH
of delegation/service.py is 3; a longer chain than this cannot have been issued)."""


class Approvals:
    def __init__(
        self,
        *,
        store: Store,
        groups: Groups,
        clock: Clock,
        ttl: dt.timedelta = DEFAULT_TTL,
        signals: ApprovalSignals | None = None,
        recheck: dt.timedelta = DEFAULT_RECHECK,
        approvers_of: ApproversOf | None = None,
        max_pending: int = MAX_PENDING_PER_REQUESTER,
        bans: BanList | None = None,
    ) -> None:
        """`recheck`: how often a waiter re-reads its approval even without a signal, so a
        decision whose notification was lost (another replica's) is still seen soon.
        `approvers_of`: the approver groups of a rule in the policy in force (None for a rule it
        no longer has); without it, every rule of a request takes the request's groups."""
        self._approvers_of = approvers_of
        self._max_pending = max_pending
        self._bans = bans
        if ttl <= dt.timedelta(0) or recheck <= dt.timedelta(0):
            raise ValueError("the approval ttl and the recheck interval must be positive")
        self._recheck = recheck.total_seconds()
        self._store = store
        self._groups = groups
        self._clock = clock
        self._ttl = ttl
        self.signals = signals or ApprovalSignals()

    @property
    def ttl(self) -> dt.timedelta:
        return self._ttl

    # -- the requester's side ----------------------------------------------------------------

    async def request(
        self,
        workload: Workload,
        task: TaskDescriptor,
        decision: Decision,
        decision_id: str,
        *,
        parent_jti: str | None = None,
    ) -> ApprovalRecord:
        """The approval in force for this requester and task: a new pending request (audited,
        approvers notified), the live one asked for before under the same parent credential
        (`parent_jti` of a delegated exchange, None for none), or a denial, which is final."""
        if decision.outcome is not Outcome.PENDING_APPROVAL:
            raise ValueError("only a pending decision asks for approval")
        now = self._clock.now()
        approval = ApprovalRecord(
            approval_id=new_approval_id(),
            requester=workload.id,
            requester_method=workload.method.value,
            cert_thumbprint=workload.cert_thumbprint,
            task_id=task.task_id,
            digest=task.digest(),
            descriptor=task.as_dict(),
            audience=task.audience,
            action=task.action,
            sensitivity=task.sensitivity.name.lower(),
            scopes=decision.scopes,
            ttl_seconds=int(decision.ttl.total_seconds()),
            rules=decision.approval_rules,
            approver_groups=decision.approver_groups,
            policy_version=decision.policy_version,
            decision_id=decision_id,
            state=ApprovalState.PENDING,
            created_at=now,
            expires_at=now + self._ttl,
            parent_jti=parent_jti,
        )
        audit = AuditEntry(
            kind="approval_requested",
            actor=workload.id,
            at=now,
            payload={
                **approval_audit(approval),
                "workload": workload_audit(workload),
                "expires_at": approval.expires_at.isoformat(),
            },
        )
        stored, created = await self._store.approvals.create_or_reuse(
            approval, audit=audit, now=now, max_pending=self._max_pending
        )
        if created:
            self.signals.notify(stored.approval_id)
        return stored

    async def wait(self, approval_id: str, up_to: dt.timedelta) -> ApprovalRecord:
        """The approval once it is no longer pending, or as it is when `up_to` has passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(up_to.total_seconds(), 0.0)
        with self.signals.waiter(approval_id) as changed:
            while True:
                approval = await self._store.approvals.get(approval_id)
                if approval is None:
                    raise NotFound(f"no approval {approval_id!r}")
                now = self._clock.now()
                if approval.effective_state(now) is not ApprovalState.PENDING:
                    return approval
                remaining = min(deadline - loop.time(), (approval.expires_at - now).total_seconds())
                if remaining <= 0:
                    return approval
                changed.clear()
                try:
                    async with asyncio.timeout(min(remaining, self._recheck)):
                        await changed.wait()
                except TimeoutError:
                    pass  # read again: a missed signal, or the state at the deadline

    async def consume(
        self,
        approval: ApprovalRecord,
        workload: Workload,
        task: TaskDescriptor,
        decision: Decision,
        decision_id: str,
        *,
        parent_jti: str | None = None,
    ) -> tuple[ApprovalRecord, Decision]:
        """Use an approved grant for this exact request, once. `decision` is the policy's
        decision made again with the grant's rules satisfied; returned capped to the approved
        TTL. `parent_jti`: the parent credential of a delegated exchange (None for none). Raises
        PermissionDenied if anything differs from what the approver saw."""
        _check_binding(approval, workload, task, decision, parent_jti)
        approved_ttl = dt.timedelta(seconds=approval.ttl_seconds)
        if decision.ttl > approved_ttl:
            decision = _with_ttl(decision, approved_ttl)
        now = self._clock.now()
        consumed = await self._store.approvals.consume(
            approval.approval_id,
            requester=workload.id,
            digest=task.digest(),
            parent_jti=parent_jti,
            at=now,
            audit=AuditEntry(
                kind="approval_consumed",
                actor=workload.id,
                at=now,
                payload={
                    "approval_id": approval.approval_id,
                    "workload": workload_audit(workload),
                    "task_digest": approval.digest,
                    "parent_jti": parent_jti,
                    "approved_by": approval.decided_by,
                    "decision_id": decision_id,
                },
            ),
        )
        self.signals.notify(consumed.approval_id)
        return consumed, decision

    # -- the approver's side -----------------------------------------------------------------

    async def approve(
        self, approver: Workload, approval_id: str, *, comment: str = ""
    ) -> ApprovalRecord:
        return await self._decide(approver, approval_id, approve=True, reason=comment)

    async def deny(self, approver: Workload, approval_id: str, *, reason: str) -> ApprovalRecord:
        if not reason.strip():
            raise InvalidRequest("reason", "a denial needs a reason the requester can act on")
        return await self._decide(approver, approval_id, approve=False, reason=reason)

    async def get(self, viewer: Workload, approval_id: str) -> ApprovalRecord:
        """An approval, for its requester or anyone who may decide it (NotFound for others,
        so ids cannot be probed)."""
        approval = await self._store.approvals.get(approval_id)
        if approval is None or not (
            viewer.id == approval.requester or self._may_decide(viewer, approval)
        ):
            raise NotFound(f"no approval {approval_id!r} that you may see")
        return approval

    async def list_pending(self, viewer: Workload) -> list[ApprovalRecord]:
        """Pending requests `viewer` may decide, oldest first, at most MAX_PAGE. Read page by
        page until that many are found: requests others decide never hide the viewer's own."""
        now = self._clock.now()
        visible: list[ApprovalRecord] = []
        after: PendingCursor | None = None
        while len(visible) < MAX_PAGE:
            page = await self._store.approvals.list_pending(now, limit=MAX_PAGE, after=after)
            visible += (a for a in page if self._may_decide(viewer, a))
            if len(page) < MAX_PAGE:
                break
            after = (page[-1].created_at, page[-1].approval_id)
        return visible[:MAX_PAGE]

    async def watch(self, viewer: Workload) -> AsyncGenerator[ApprovalChange, None]:
        """What `viewer` may decide: every pending request first, then each change as it
        happens (new requests, and decisions, uses or expiries of ones it saw)."""
        # Subscribed before the first read, so nothing falls between them; a request that
        # appears in both is announced once (`announced`: last state sent per request).
        announced: dict[str, ApprovalState] = {}
        with self.signals.subscribe() as changes:
            for approval in await self.list_pending(viewer):
                announced[approval.approval_id] = ApprovalState.PENDING
                yield ApprovalChange(approval, ApprovalState.PENDING)
            async for approval_id in changes:
                # A viewer banned while watching sees no more (PermissionDenied ends the
                # stream): the interceptor refuses only calls that start after the ban.
                if self._bans is not None:
                    self._bans.check(viewer.id)
                if approval_id == RESYNC:
                    for approval in await self.list_pending(viewer):
                        if announced.get(approval.approval_id) is not ApprovalState.PENDING:
                            announced[approval.approval_id] = ApprovalState.PENDING
                            yield ApprovalChange(approval, ApprovalState.PENDING)
                    continue
                changed = await self._store.approvals.get(approval_id)
                if changed is None or not self._may_decide(viewer, changed):
                    continue
                state = changed.effective_state(self._clock.now())
                if announced.get(approval_id) is state:
                    continue
                announced[approval_id] = state
                yield ApprovalChange(changed, state)

    def may_decide(self, viewer: Workload, approval: ApprovalRecord) -> bool:
        return self._may_decide(viewer, approval)

    # -- internals ---------------------------------------------------------------------------

    def _may_decide(self, viewer: Workload, approval: ApprovalRecord) -> bool:
        return viewer.id != approval.requester and self._groups.member_of_any(
            viewer.id, approval.approver_groups
        )

    async def _decide(
        self, approver: Workload, approval_id: str, *, approve: bool, reason: str
    ) -> ApprovalRecord:
        if len(reason.encode()) > MAX_REASON or not reason.isprintable():
            raise InvalidRequest(
                "reason", f"printable text on one line, at most {MAX_REASON} bytes"
            )
        approval = await self._store.approvals.get(approval_id)
        if approval is None:
            raise NotFound(f"no approval {approval_id!r}")
        await self._check_decider(approver, approval, approve=approve)
        now = self._clock.now()
        state = approval.effective_state(now)
        if state is not ApprovalState.PENDING:
            raise Conflict(
                f"approval {approval_id} is {state.value}, not pending: nothing to decide"
            )
        # an approval opens a fresh window for the requester to use it; a denial keeps the old
        expires_at = now + self._ttl if approve else approval.expires_at
        decided = await self._store.approvals.decide(
            approval_id,
            approve=approve,
            by=approver.id,
            at=now,
            reason=reason,
            expires_at=expires_at,
            audit=AuditEntry(
                kind="approval_granted" if approve else "approval_denied",
                actor=approver.id,
                at=now,
                payload={
                    **approval_audit(approval),
                    "approver": workload_audit(approver),
                    "reason": reason,
                    "expires_at": expires_at.isoformat(),
                },
            ),
        )
        self.signals.notify(approval_id)
        return decided

    def satisfied_by(self, approval: ApprovalRecord) -> frozenset[str]:
        """The rules of a granted approval its approver may satisfy under the policy in force:
        each rule only by a member of its own approver groups."""
        by = approval.decided_by or ""
        return frozenset(
            rule
            for rule in approval.rules
            if self._groups.member_of_any(by, self._rule_groups(approval, rule))
        )

    def _rule_groups(self, approval: ApprovalRecord, rule: str) -> Collection[str]:
        groups = self._approvers_of(rule) if self._approvers_of is not None else None
        return approval.approver_groups if groups is None else groups

    async def _delegated_for(self, approval: ApprovalRecord) -> set[str]:
        """Who holds the credentials a delegated request descends from: the principal it is
        made for and every actor between, none of whom may decide it."""
        holders: set[str] = set()
        jti = approval.parent_jti
        for _ in range(MAX_DELEGATION_WALK):
            if not jti:
                break
            parent = await self._store.credentials.get_credential(jti)
            if parent is None:
                break
            holders.add(parent.requester)
            jti = parent.parent_jti
        return holders

    async def _check_decider(
        self, approver: Workload, approval: ApprovalRecord, *, approve: bool
    ) -> None:
        action = "approve" if approve else "deny"
        groups = ", ".join(approval.approver_groups)
        # To approve, a member of every rule's own groups; to deny, of any of them (a veto).
        lacking = [
            rule
            for rule in approval.rules
            if not self._groups.member_of_any(approver.id, self._rule_groups(approval, rule))
        ]
        if approver.id == approval.requester:
            problem = (
                f"{approver.id} asked for approval {approval.approval_id} and may not {action} "
                "its own request, whatever groups it is in: another approver must decide"
            )
        elif not self._groups.member_of_any(approver.id, approval.approver_groups):
            problem = (
                f"{approver.id} may not {action} approval {approval.approval_id}: rule(s) "
                f"{', '.join(approval.rules)} need a member of {groups} (groups are set by the "
                "security team in the server config)"
            )
        elif approve and lacking:
            needed = "; ".join(
                f"{rule} needs a member of {', '.join(sorted(self._rule_groups(approval, rule)))}"
                for rule in lacking
            )
            problem = (
                f"{approver.id} may not approve approval {approval.approval_id}: {needed}. One "
                "approver must be able to approve every rule the request needs"
            )
        elif approver.id in await self._delegated_for(approval):
            problem = (
                f"{approver.id} may not {action} approval {approval.approval_id}: the request "
                "is delegated from a credential it holds, so it is made on its behalf; another "
                "approver must decide"
            )
        else:
            return
        now = self._clock.now()
        await self._store.audit.append(
            AuditEntry(
                kind="approval_refused",
                actor=approver.id,
                at=now,
                payload={
                    "approval_id": approval.approval_id,
                    "attempted": action,
                    "workload": workload_audit(approver),
                    "requester": approval.requester,
                    "parent_jti": approval.parent_jti,
                    "approver_groups": list(approval.approver_groups),
                    "reason": problem,
                },
            )
        )
        raise PermissionDenied(problem, details={"approval_id": approval.approval_id})


def _check_binding(
    approval: ApprovalRecord,
    workload: Workload,
    task: TaskDescriptor,
    decision: Decision,
    parent_jti: str | None,
) -> None:
    """The grant covers exactly what the approver was shown, or nothing."""
    mismatch = ""
    if approval.requester != workload.id:
        mismatch = "it was granted to another requester"
    elif approval.digest != task.digest():
        mismatch = "it was granted for another task (the task descriptor differs)"
    elif parent := approval.parent_mismatch(parent_jti):
        mismatch = parent
    elif (approval.audience, approval.action) != (task.audience, task.action):
        mismatch = "it was granted for another audience or action"
    elif decision.outcome is not Outcome.ALLOW:
        mismatch = f"the policy now decides {decision.outcome.value} for this task"
    elif sorted(decision.scopes) != sorted(approval.scopes):
        mismatch = "the policy now grants other scopes than the approver saw"
    if mismatch:
        raise PermissionDenied(
            f"approval {approval.approval_id} does not cover this request: {mismatch}; "
            "ask for a new approval",
            details={"approval_id": approval.approval_id},
        )


def _with_ttl(decision: Decision, ttl: dt.timedelta) -> Decision:
    return dataclasses.replace(decision, ttl=ttl)
