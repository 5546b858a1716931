"""The rules of one delegation hop. Every hop may only narrow: same audience, task, action and
environment, at least the parent's sensitivity, a subset of the scopes, a lifetime inside the
parent's, one level deeper than the parent, never past the configured maximum depth. Pure
functions over already-verified claims; no I/O, no gRPC.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from taskpass.server.errors import InvalidRequest, PermissionDenied
from taskpass.server.identity.workload import Workload
from taskpass.server.tasks.descriptor import Sensitivity, TaskDescriptor


@dataclass(frozen=True, slots=True)
class ParentCredential:
    """What a verified subject token says about itself."""

    jti: str
    subject: str  # `sub`: the principal the whole chain acts for
    holder: str  # `client_id`: the workload the parent credential was issued to
    audience: str
    scopes: frozenset[str]
    task_id: str
    action: str
    sensitivity: Sensitivity
    environment: str
    expires_at: dt.datetime
    actor: Mapping[str, Any] | None  # the parent's own `act` chain, if it was delegated
    rules: tuple[str, ...]  # policy rules that allowed the parent
    cert_thumbprint: str | None  # the parent's `cnf.x5t#S256`

    @property
    def depth(self) -> int:
        """0 for a credential issued directly, n for one n hops down."""
        return actor_depth(self.actor)

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> ParentCredential:
        """Read a signature-checked at+jwt's claims; malformed ones are an invalid subject token."""
        try:
            task = claims.get("task") or {}
            cnf = claims.get("cnf") or {}
            act = claims.get("act")
            rules = task.get("rules", [])
            scope = claims.get("scope", "")
            if not isinstance(scope, str) or not isinstance(rules, list):
                raise TypeError
            return cls(
                jti=_text(claims, "jti"),
                subject=_text(claims, "sub"),
                holder=_text(claims, "client_id"),
                audience=_text(claims, "aud"),
                scopes=frozenset(scope.split()),
                task_id=_text(claims, "txn"),
                action=_text(task, "action"),
                sensitivity=Sensitivity[_text(task, "sensitivity").upper()],
                environment=str(task.get("environment", "")),
                expires_at=dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC),
                actor=act if isinstance(act, dict) else None,
                rules=tuple(str(r) for r in rules),
                cert_thumbprint=cnf.get("x5t#S256") if isinstance(cnf, dict) else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InvalidRequest(
                "subject_token", "is not a taskpass credential (missing or malformed claims)"
            ) from None


def _text(claims: Mapping[str, Any], name: str) -> str:
    value = claims[name]
    if not isinstance(value, str) or not value:
        raise TypeError(name)
    return value


def actor_depth(actor: Mapping[str, Any] | None) -> int:
    depth = 0
    while isinstance(actor, Mapping):
        depth += 1
        actor = actor.get("act")
    return depth


def _check_same_kind_of_work(parent: ParentCredential, task: TaskDescriptor) -> None:
    """The task claim a relying party (and policy) reads must not loosen the parent's."""
    if task.action != parent.action:
        raise PermissionDenied(
            f"action {task.action} is not the parent credential's action {parent.action}; "
            "delegation can only narrow"
        )
    if task.environment != parent.environment:
        raise PermissionDenied(
            f"environment {task.environment or '(none)'} is not the parent credential's "
            f"environment {parent.environment or '(none)'}; delegation can only narrow"
        )
    if task.sensitivity < parent.sensitivity:
        raise PermissionDenied(
            f"sensitivity {task.sensitivity.name.lower()} is below the parent credential's "
            f"{parent.sensitivity.name.lower()}; a delegated task is at least as sensitive"
        )


@dataclass(frozen=True, slots=True)
class Hop:
    """What the child credential of one delegation hop will carry."""

    parent: ParentCredential
    depth: int
    subject: str
    actor: dict[str, Any]  # RFC 8693 §4.1: newest actor outermost, the oldest nested deepest
    scopes: frozenset[str]  # the most the child may have: parent's, narrowed by the request


def plan_hop(
    parent: ParentCredential,
    *,
    caller: Workload,
    task: TaskDescriptor,
    requested_scopes: Sequence[str],
    max_depth: int,
    now: dt.datetime,
) -> Hop:
    """Check that this hop only narrows; raise PermissionDenied / InvalidRequest saying how not."""
    if parent.expires_at <= now:
        raise PermissionDenied("the parent credential has expired; delegation needs a live parent")
    if caller.id == parent.holder:
        raise PermissionDenied(
            "a workload cannot delegate to itself; exchange for a new credential instead"
        )
    if task.task_id != parent.task_id:
        raise InvalidRequest(
            "task.task_id", f"must be the parent credential's task ({parent.task_id})"
        )
    if task.audience != parent.audience:
        raise PermissionDenied(
            f"audience {task.audience} is not the parent credential's audience "
            f"{parent.audience}; delegation can only narrow"
        )
    _check_same_kind_of_work(parent, task)
    wider = sorted(set(requested_scopes) - parent.scopes)
    if wider:
        raise PermissionDenied(
            f"scope(s) {' '.join(wider)} are wider than the parent credential's "
            f"({' '.join(sorted(parent.scopes)) or 'none'}); delegation can only narrow"
        )
    if now + task.requested_ttl > parent.expires_at:
        remaining = int((parent.expires_at - now).total_seconds())
        raise PermissionDenied(
            f"the requested lifetime ({int(task.requested_ttl.total_seconds())}s) outlives the "
            f"parent credential ({remaining}s left); ask for at most {remaining}s"
        )
    depth = parent.depth + 1
    if depth > max_depth:
        raise PermissionDenied(
            f"delegation depth {depth} exceeds the configured maximum of {max_depth}"
        )
    actor: dict[str, Any] = {"sub": caller.id}
    if parent.actor is not None:
        actor["act"] = dict(parent.actor)
    scopes = frozenset(requested_scopes) if requested_scopes else parent.scopes
    return Hop(parent=parent, depth=depth, subject=parent.subject, actor=actor, scopes=scopes)
