"""Delegation in the exchange (RFC 8693): the caller is the actor, the subject token is the parent
credential it acts under.

What TaskService asks of this module, in order:
1. `plan`: the subject token is ours (signature, issuer, typ), recorded, live (not revoked, its
   task not completed, its holder not banned), matches its record (holder, task, audience,
   `cnf`), and the hop only narrows (chain.plan_hop, with the configured maximum depth, which no
   policy can lift). Each refusal is audited and raised with its reason.
2. `policy_request`: the policy decides as for any exchange, told the depth, the parent's
   holder and the rules that allowed the parent.
3. `narrow`: the decision's scopes intersected with the hop's, its TTL cut to the parent's
   remaining lifetime; nothing left in common is a denial saying so.
4. `bound` / `audit`: the caller as the issuer must see it (never outliving the parent), and
   what the audit records say about the hop.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from taskpass.server.delegation.chain import Hop, ParentCredential, plan_hop
from taskpass.server.errors import InvalidRequest, PermissionDenied
from taskpass.server.identity.workload import Workload
from taskpass.server.issuer.verify import TokenVerifier
from taskpass.server.policy.decision import Decision, Outcome
from taskpass.server.policy.request import PolicyRequest
from taskpass.server.revocation.bans import BanList
from taskpass.server.store.base import Store
from taskpass.server.store.records import AuditEntry, CredentialRecord
from taskpass.server.tasks.descriptor import TaskDescriptor

DEFAULT_MAX_DEPTH: Final = 3
MAX_SCOPES: Final = 32
MAX_SCOPE_BYTES: Final = 256
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 scope-token
_ONE_SECOND = dt.timedelta(seconds=1)

NOT_OURS: Final = "the subject token is not a valid taskpass credential"
REVOKED: Final = "the parent credential is revoked"


class Delegation:
    """Checks and plans delegation hops; no gRPC, no signing (TaskService issues)."""

    def __init__(
        self,
        *,
        verifier: TokenVerifier,
        store: Store,
        bans: BanList | None = None,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        if max_depth < 1:
            raise ValueError("max_depth must be at least 1")
        self._verifier = verifier
        self._store = store
        self._bans = bans
        self._max_depth = max_depth

    @property
    def max_depth(self) -> int:
        return self._max_depth

    async def plan(
        self,
        workload: Workload,
        task: TaskDescriptor,
        *,
        subject_token: str,
        scopes: Sequence[str],
        now: dt.datetime,
    ) -> Hop:
        """The hop `workload` may take under `subject_token`, or PermissionDenied /
        InvalidRequest (audited as `delegation_refused`) saying why not."""
        parent_jti: str | None = None
        try:
            requested = _checked_scopes(scopes)
            claims = self._verifier.verify(subject_token, check_lifetime=False)
            if claims is None:
                raise PermissionDenied(
                    f"{NOT_OURS} (its signature, issuer or type does not check out); pass the "
                    "access token your parent agent received from this server"
                )
            parent = ParentCredential.from_claims(claims)
            parent_jti = parent.jti
            await self._check_live(parent, workload)
            hop = plan_hop(
                parent,
                caller=workload,
                task=task,
                requested_scopes=requested,
                max_depth=self._max_depth,
                now=now,
            )
            _check_no_loop(hop, workload)
            return hop
        except (PermissionDenied, InvalidRequest) as refusal:
            await self._store.audit.append(
                AuditEntry(
                    kind="delegation_refused",
                    actor=workload.id,
                    at=now,
                    payload={
                        "workload": _workload_audit(workload),
                        "task": task.as_dict(),
                        "parent_jti": parent_jti,
                        "reason": refusal.message,
                    },
                )
            )
            raise

    async def _check_live(self, parent: ParentCredential, caller: Workload) -> None:
        record = await self._store.credentials.get_credential(parent.jti)
        if record is None:
            raise PermissionDenied(f"{NOT_OURS} (no credential with its jti was issued here)")
        if not _matches(record, parent):
            raise PermissionDenied(
                f"{NOT_OURS} (its holder, task or audience differ from the credential issued "
                "with its jti)"
            )
        if record.cert_thumbprint != parent.cert_thumbprint:
            raise PermissionDenied(
                f"{NOT_OURS} (its cnf does not match the certificate the credential was issued to)"
            )
        if record.revoked_at is not None:
            raise PermissionDenied(f"{REVOKED}; ask its holder for a live one")
        task = await self._store.credentials.get_task(record.requester, record.task_id)
        if task is not None and task.completed_at is not None:
            raise PermissionDenied(f"{REVOKED}: its task {record.task_id!r} is completed")
        if self._bans is not None and self._bans.banned(record.requester) is not None:
            raise PermissionDenied(f"{REVOKED}: its holder {record.requester} is banned")
        if parent.cert_thumbprint is not None and caller.cert_thumbprint is None:
            raise PermissionDenied(
                "the parent credential is bound to a certificate (cnf), so a delegated one must "
                "be too: call over mTLS with your X.509-SVID, not a JWT-SVID bearer"
            )


def policy_request(
    workload: Workload,
    task: TaskDescriptor,
    now: dt.datetime,
    hop: Hop | None,
    satisfied_approvals: frozenset[str] = frozenset(),
) -> PolicyRequest:
    """What the policy is asked; for a hop, with its depth, the parent's holder and rules."""
    if hop is None:
        return PolicyRequest(
            workload=workload, task=task, now=now, satisfied_approvals=satisfied_approvals
        )
    return PolicyRequest(
        workload=workload,
        task=task,
        now=now,
        satisfied_approvals=satisfied_approvals,
        delegation_depth=hop.depth,
        parent_rules=hop.parent.rules,
        parent_id=hop.parent.holder,
    )


def narrow(decision: Decision, hop: Hop, now: dt.datetime) -> Decision:
    """The policy's decision, held inside the parent credential: its scopes that the hop allows,
    and no lifetime past the parent's expiry. Nothing in common (or no time left) is a deny."""
    if decision.outcome is Outcome.DENY:
        return decision
    scopes = tuple(scope for scope in decision.scopes if scope in hop.scopes)
    if not scopes:
        return _deny(
            decision,
            f"delegation can only narrow, and nothing is left: the policy grants "
            f"{_listing(decision.scopes)}, the parent credential allows at most "
            f"{_listing(sorted(hop.scopes))}",
        )
    remaining = hop.parent.expires_at - now
    remaining = dt.timedelta(seconds=int(remaining.total_seconds()))  # whole seconds, down
    if remaining < _ONE_SECOND:
        return _deny(decision, "the parent credential expires now: no lifetime is left to give")
    ttl, note = decision.ttl, ""
    if remaining < ttl:
        ttl, note = remaining, f", ttl {int(remaining.total_seconds())}s set by the parent"
    if scopes == decision.scopes and not note:
        return decision
    return dataclasses.replace(
        decision,
        scopes=scopes,
        ttl=ttl,
        reason=f"{decision.reason}; narrowed to the parent credential: scopes "
        f"{' '.join(scopes)}{note}",
    )


def bound(workload: Workload, hop: Hop | None) -> Workload:
    """The caller as the issuer sees it: its credential never outlives the parent's."""
    if hop is None or workload.expires_at <= hop.parent.expires_at:
        return workload
    return dataclasses.replace(workload, expires_at=hop.parent.expires_at)


def audit(hop: Hop) -> dict[str, Any]:
    """How the audit trail links a child to its parent: the parent's jti and holder, the depth,
    and the chain from this hop's actor back to the principal."""
    return {
        "parent_jti": hop.parent.jti,
        "parent_holder": hop.parent.holder,
        "principal": hop.subject,
        "depth": hop.depth,
        "chain": [*_actors(hop.actor), hop.subject],
        "parent_rules": list(hop.parent.rules),
    }


def _checked_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    if len(scopes) > MAX_SCOPES:
        raise InvalidRequest("scopes", f"at most {MAX_SCOPES} scopes")
    for scope in scopes:
        if len(scope.encode()) > MAX_SCOPE_BYTES or not _SCOPE.fullmatch(scope):
            raise InvalidRequest(
                "scopes",
                f"each scope is printable ASCII without spaces or quotes, at most "
                f"{MAX_SCOPE_BYTES} bytes",
            )
    return tuple(dict.fromkeys(scopes))


def _matches(record: CredentialRecord, parent: ParentCredential) -> bool:
    return (record.requester, record.task_id, record.audience) == (
        parent.holder,
        parent.task_id,
        parent.audience,
    )


def _actors(actor: Mapping[str, Any] | None) -> list[str]:
    """The `act` chain's subjects, newest first (RFC 8693 §4.1 nests the oldest deepest)."""
    found: list[str] = []
    while isinstance(actor, Mapping):
        found.append(str(actor.get("sub", "")))
        actor = actor.get("act")
    return found


def _check_no_loop(hop: Hop, caller: Workload) -> None:
    earlier = [hop.subject, *_actors(hop.parent.actor)]
    if caller.id in earlier:
        raise PermissionDenied(
            f"{caller.id} is already in this delegation chain; a chain never loops back"
        )


def _deny(decision: Decision, reason: str) -> Decision:
    return dataclasses.replace(
        decision,
        outcome=Outcome.DENY,
        ttl=dt.timedelta(0),
        scopes=(),
        approval_rules=(),
        approver_groups=(),
        reason=reason,
    )


def _listing(scopes: Sequence[str]) -> str:
    return " ".join(scopes) if scopes else "no scope"


def _workload_audit(workload: Workload) -> dict[str, Any]:
    return {
        "id": workload.id,
        "method": workload.method.value,
        "cert_sha256": workload.cert_thumbprint,
    }
