"""Builders for the value objects the issuer consumes, built from their own modules."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

from taskpass.server.identity.workload import AttestationMethod, Workload
from taskpass.server.issuer.keys import KeyRing
from taskpass.server.policy.decision import Decision, Outcome
from taskpass.server.tasks.descriptor import Sensitivity, TaskDescriptor

# Real time (whole seconds) because the PyJWT interop checks validate exp/nbf/iat against the
# system clock and cannot be given a clock; everything else is relative to START.
START = dt.datetime.now(dt.UTC).replace(microsecond=0)
ISSUER = "https://taskpass.example.org"
AGENT = "spiffe://example.org/agents/billing"
THUMBPRINT = "q3ND1vYjpo6xKVu8VLZlT2DYnRy6XhZzi9Fx6EWmd3E"

RingFactory = Callable[..., KeyRing]


def make_workload(**changes: object) -> Workload:
    workload = Workload(
        id=AGENT,
        method=AttestationMethod.X509_SVID,
        trust_domain="example.org",
        expires_at=START + dt.timedelta(hours=1),
        cert_thumbprint=THUMBPRINT,
    )
    return dataclasses.replace(workload, **changes)  # type: ignore[arg-type]


def make_task(**changes: object) -> TaskDescriptor:
    task = TaskDescriptor(
        task_id="task-42",
        audience="payments-api",
        action="read",
        sensitivity=Sensitivity.INTERNAL,
        requested_ttl=dt.timedelta(minutes=10),
        tool="ledger-cli",
        environment="prod",
    )
    return dataclasses.replace(task, **changes)  # type: ignore[arg-type]


def make_decision(**changes: object) -> Decision:
    decision = Decision(
        outcome=Outcome.ALLOW,
        policy_version="sha256:abc123",
        matched_rules=("payments.read.agents",),
        ttl=dt.timedelta(minutes=10),
        scopes=("payments:read", "payments:list"),
    )
    return dataclasses.replace(decision, **changes)  # type: ignore[arg-type]
