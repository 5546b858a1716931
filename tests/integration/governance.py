"""Helpers of the governance tests: a harness on the governance policy, and who is who."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from taskpass.client import TaskpassClient
from taskpass.client.admin import AdminClient, AuditRecord
from taskpass.client.approvals import ApprovalsClient
from taskpass.server.clock import Clock
from tests.integration.harness import ADMIN, Harness, start_harness
from tests.support.pki import EXAMPLE, TestPki

POLICY = Path(__file__).parent / "governance_policy.yaml"
ALICE = f"spiffe://{EXAMPLE}/humans/approvers/alice"
BOB = f"spiffe://{EXAMPLE}/humans/approvers/bob"
ONCALL = f"spiffe://{EXAMPLE}/platform/oncall"
AUDITOR = f"spiffe://{EXAMPLE}/security/auditor"
T = TypeVar("T")


async def start_governance(
    directory: Path,
    pki: TestPki,
    *,
    approval_ttl_seconds: float = 900,
    clock: Clock | None = None,
) -> Harness:
    return await start_harness(
        directory,
        pki,
        policy=POLICY,
        approval_ttl_seconds=approval_ttl_seconds,
        clock=clock,
    )


def approvals_of(client: TaskpassClient) -> ApprovalsClient:
    return ApprovalsClient.over(client)


def admin(harness: Harness, spiffe_id: str = ADMIN) -> TaskpassClient:
    return harness.agent(spiffe_id)


async def audit_log(harness: Harness) -> list[AuditRecord]:
    async with admin(harness) as client:
        return [r async for r in AdminClient.over(client).export_audit()]


async def soon(awaitable: Awaitable[T]) -> T:
    """What a waiting call returns once it has been woken: a couple of seconds at most."""
    return await asyncio.wait_for(awaitable, 5)
