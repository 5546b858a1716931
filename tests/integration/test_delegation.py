"""Delegation over the real server (RFC 8693): a sub-agent trades its parent's credential for a
narrower one of its own; every escalation is refused with its reason; the chain stays readable
(the `act` claim) and accountable (the audit trail)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from taskpass._proto.v1 import credential_pb2 as pb
from taskpass._proto.v1 import credential_pb2_grpc as pb_grpc
from taskpass.client import (
    ApprovalPending,
    ApprovalsClient,
    CredentialVerifier,
    Denied,
    InvalidRequest,
    InvalidToken,
    PermissionDenied,
    Reason,
    Task,
    TaskCredential,
    TaskpassClientError,
)
from taskpass.server.clock import FixedClock
from taskpass.server.issuer.jws import sign_compact
from taskpass.server.store.base import MAX_PAGE
from tests.integration.delegating import (
    RUNNER,
    TASK_ID,
    agent,
    chain,
    read,
    start_delegation,
    thumbprint,
    tool,
    verified_claims,
)
from tests.integration.harness import AUDIENCE, BILLING_BOT, ISSUER, REPORT_BOT, SIDECAR, Harness
from tests.support.pki import EXAMPLE, TestPki

ALICE = f"spiffe://{EXAMPLE}/humans/approvers/alice"


@pytest.fixture
async def harness(tmp_path: Path, pki: TestPki) -> AsyncIterator[Harness]:
    running = await start_delegation(tmp_path, pki)
    try:
        yield running
    finally:
        await running.server.stop(grace=0.5)


async def test_a_sub_agent_gets_its_own_narrower_credential_bound_to_its_certificate(
    harness: Harness,
) -> None:
    parent = await agent(harness).exchange(read())
    runner = agent(harness, RUNNER)

    child = await runner.delegate(parent, ttl=120, scopes=("payments:read",))

    assert child.scopes == ("payments:read",)
    assert child.matched_rules == ("grant.delegated.tools",)
    assert child.expires_at <= parent.expires_at
    claims = await verified_claims(harness, child.token)
    assert claims["sub"] == BILLING_BOT  # the principal the chain acts for
    assert claims["client_id"] == RUNNER
    assert claims["act"] == {"sub": RUNNER}
    assert claims["txn"] == TASK_ID
    assert claims["aud"] == "payments-api"
    assert claims["scope"] == "payments:read"
    assert claims["exp"] - claims["iat"] == 120
    assert claims["cnf"] == {"x5t#S256": thumbprint(runner.leaf)}
    # introspection (RFC 7662) says the same: the bound certificate (RFC 8705) and the actor
    async with harness.agent(SIDECAR) as sidecar:
        seen = await sidecar.introspect(child.token)
    assert seen.claims["cnf"] == {"x5t#S256": thumbprint(runner.leaf)}
    assert seen.claims["act"] == {"sub": RUNNER}


async def test_without_scopes_the_child_gets_what_the_parent_and_the_policy_both_allow(
    harness: Harness,
) -> None:
    parent = await agent(harness).exchange(read())

    child = await agent(harness, RUNNER).delegate(parent)

    assert child.scopes == ("payments:list", "payments:read")


async def test_the_act_chain_reads_newest_outermost_and_oldest_deepest_with_pyjwt(
    harness: Harness,
) -> None:
    root, first, second, third = await chain(harness, depth=3)

    claims = await verified_claims(harness, third.token)

    # RFC 8693 §4.1: the current actor outermost, each prior actor nested in its `act`.
    assert claims["act"] == {
        "sub": tool(3),
        "act": {"sub": tool(2), "act": {"sub": tool(1)}},
    }
    assert (claims["sub"], claims["client_id"]) == (BILLING_BOT, tool(3))
    assert claims["txn"] == TASK_ID
    for parent, child in ((root, first), (first, second), (second, third)):
        assert child.expires_at <= parent.expires_at


async def test_the_parent_token_is_useless_in_the_sub_agents_hands_and_vice_versa(
    harness: Harness,
) -> None:
    billing = agent(harness)
    runner = agent(harness, RUNNER)
    parent = await billing.exchange(read())
    child = await runner.delegate(parent)

    async with runner.client() as client:
        verifier = CredentialVerifier.from_client(client, issuer=ISSUER, audience="payments-api")
        verified = await verifier.verify(child.token, peer_certificate=runner.leaf.der)
        assert (verified.subject, verified.client_id) == (BILLING_BOT, RUNNER)
        assert verified.claims["act"] == {"sub": RUNNER}
        with pytest.raises(InvalidToken) as parent_replayed:
            await verifier.verify(parent.token, peer_certificate=runner.leaf.der)
        with pytest.raises(InvalidToken) as child_replayed:
            await verifier.verify(child.token, peer_certificate=billing.leaf.der)

    assert parent_replayed.value.reason is Reason.CERTIFICATE_MISMATCH
    assert child_replayed.value.reason is Reason.CERTIFICATE_MISMATCH


def _resigned(harness: Harness, token: str, **changes: Any) -> str:
    """The token's claims changed and signed again with the server's own active key: a token
    whose signature checks out but which no exchange issued."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return sign_compact(harness.server.components.keys.active, typ="at+jwt", claims=claims)


def _tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "payments:read payments:write"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


Attempt = Callable[[Harness, TaskCredential], Awaitable[TaskCredential]]


def _runner(**kwargs: Any) -> Attempt:
    async def attempt(harness: Harness, parent: TaskCredential) -> TaskCredential:
        return await agent(harness, RUNNER).delegate(parent, **kwargs)

    return attempt


def _token(make: Callable[[Harness, str], str]) -> Attempt:
    async def attempt(harness: Harness, parent: TaskCredential) -> TaskCredential:
        return await agent(harness, RUNNER).delegate(make(harness, parent.token))

    return attempt


def _by(spiffe_id: str) -> Attempt:
    async def attempt(harness: Harness, parent: TaskCredential) -> TaskCredential:
        return await agent(harness, spiffe_id).delegate(parent)

    return attempt


async def _revoked_first(harness: Harness, parent: TaskCredential) -> TaskCredential:
    async with agent(harness).client() as client:
        await client.complete_task(TASK_ID)
    return await agent(harness, RUNNER).delegate(parent)


async def _under_report_bot(harness: Harness, parent: TaskCredential) -> TaskCredential:
    others = await agent(harness, REPORT_BOT).exchange(read("t-report"))
    return await agent(harness, RUNNER).delegate(others, task=read("t-report", ttl=60))


async def _bearer(harness: Harness, parent: TaskCredential) -> TaskCredential:
    svid = harness.pki.jwt(RUNNER, audience=AUDIENCE)
    async with harness.bearer(svid) as client:
        return await client.exchange(read(ttl=60), on_behalf_of=parent.token)


@pytest.mark.parametrize(
    ("attempt", "error", "reason"),
    [
        pytest.param(
            _runner(scopes=("payments:write",)),
            PermissionDenied,
            "scope(s) payments:write are wider than the parent credential's",
            id="wider-scope",
        ),
        pytest.param(
            _runner(scopes=("payments:read\n",)),  # a $-anchored check would let it through
            InvalidRequest,
            "each scope is printable ASCII without spaces or quotes",
            id="scope-with-trailing-newline",
        ),
        pytest.param(
            _runner(task=read(audience="ledger-api", ttl=60)),
            PermissionDenied,
            "audience ledger-api is not the parent credential's audience payments-api",
            id="another-audience",
        ),
        pytest.param(
            _runner(task=read(sensitivity="public", ttl=60)),
            PermissionDenied,
            "sensitivity public is below the parent credential's internal",
            id="less-sensitive",
        ),
        pytest.param(
            _runner(task=Task(TASK_ID, "payments-api", "write", ttl=dt.timedelta(seconds=60))),
            PermissionDenied,
            "action write is not the parent credential's action read",
            id="another-action",
        ),
        pytest.param(
            _runner(ttl=3600),
            PermissionDenied,
            "outlives the parent credential",
            id="longer-lifetime",
        ),
        pytest.param(
            _runner(task=read("t-other", ttl=60)),
            InvalidRequest,
            f"must be the parent credential's task ({TASK_ID})",
            id="another-task",
        ),
        pytest.param(
            _revoked_first, PermissionDenied, "parent credential is revoked", id="revoked"
        ),
        pytest.param(
            _by(f"spiffe://{EXAMPLE}/services/intruder"),
            Denied,
            "no grant matched audience payments-api action read",
            id="caller-not-allowed-by-policy",
        ),
        pytest.param(
            _under_report_bot,
            Denied,
            "no grant matched audience payments-api action read",
            id="parent-not-allowed-to-delegate",
        ),
        pytest.param(_by(BILLING_BOT), PermissionDenied, "cannot delegate to itself", id="self"),
        pytest.param(
            _token(lambda harness, token: _tampered(token)),
            PermissionDenied,
            "the subject token is not a valid taskpass credential",
            id="forged-signature",
        ),
        pytest.param(
            _token(lambda harness, token: _resigned(harness, token, cnf={"x5t#S256": "stolen"})),
            PermissionDenied,
            "its cnf does not match the certificate the credential was issued to",
            id="cnf-does-not-check-out",
        ),
        pytest.param(
            _token(lambda harness, token: _resigned(harness, token, jti="never-issued")),
            PermissionDenied,
            "no credential with its jti was issued here",
            id="never-issued",
        ),
        pytest.param(
            _bearer,
            PermissionDenied,
            "a delegated one must be too: call over mTLS",
            id="bearer-under-a-bound-parent",
        ),
    ],
)
async def test_every_escalation_is_refused_with_its_reason_and_audited(
    harness: Harness,
    attempt: Attempt,
    error: type[TaskpassClientError],
    reason: str,
) -> None:
    parent = await agent(harness).exchange(read())

    with pytest.raises(error) as refused:
        await attempt(harness, parent)

    assert reason in refused.value.message
    records = await harness.server.store.audit.read(limit=MAX_PAGE)
    assert not [r for r in records if r.kind == "issuance" and r.payload.get("delegation")]
    if not isinstance(refused.value, Denied):  # policy denials are audited as decisions
        [audited] = [r for r in records if r.kind == "delegation_refused"]
        assert reason in audited.payload["reason"]


async def test_a_policy_grant_with_nothing_in_common_with_the_parent_is_a_denial_saying_so(
    harness: Harness,
) -> None:
    parent = await agent(harness).exchange(read(audience="ledger-api"))

    with pytest.raises(Denied) as denied:
        await agent(harness, RUNNER).delegate(parent, task=read(audience="ledger-api", ttl=60))

    assert "delegation can only narrow, and nothing is left" in denied.value.message
    assert "the policy grants ledger:audit" in denied.value.message
    assert "the parent credential allows at most ledger:read" in denied.value.message


async def test_the_configured_maximum_depth_holds_though_the_policy_allows_any(
    harness: Harness,
) -> None:
    credentials = await chain(harness, depth=3)  # max_depth defaults to 3

    with pytest.raises(PermissionDenied) as refused:
        await agent(harness, tool(4)).delegate(credentials[-1], task=read(ttl=60))

    assert "delegation depth 4 exceeds the configured maximum of 3" in refused.value.message


@pytest.mark.parametrize("earlier", [tool(1), BILLING_BOT], ids=["an-actor", "the-principal"])
async def test_a_chain_never_loops_back_to_an_earlier_holder(
    harness: Harness, earlier: str
) -> None:
    *_, last = await chain(harness, depth=2)

    with pytest.raises(PermissionDenied, match="is already in this delegation chain"):
        await agent(harness, earlier).delegate(last, task=read(ttl=60))


async def test_an_expired_parent_is_refused_as_expired(tmp_path: Path, pki: TestPki) -> None:
    clock = FixedClock(dt.datetime.now(dt.UTC).replace(microsecond=0))
    harness = await start_delegation(tmp_path, pki, clock=clock)
    try:
        parent = await agent(harness).exchange(read(ttl=60))
        clock.advance(dt.timedelta(seconds=61))
        with pytest.raises(PermissionDenied, match="the parent credential has expired"):
            await agent(harness, RUNNER).delegate(parent, ttl=30)
    finally:
        await harness.server.stop(grace=0.5)


async def test_approvals_still_apply_to_a_delegation_the_policy_wants_approved(
    harness: Harness,
) -> None:
    parent = await agent(harness).exchange(read(sensitivity="confidential"))
    runner = agent(harness, RUNNER)
    task = read(sensitivity="confidential", ttl=60)

    with pytest.raises(ApprovalPending) as pending:
        await runner.delegate(parent, task=task)
    async with harness.agent(ALICE) as alice:
        await ApprovalsClient.over(alice).approve(pending.value.approval_id, comment="ok")
    child = await runner.delegate(parent, task=task)

    assert child.approval_id == pending.value.approval_id
    claims = await verified_claims(harness, child.token)
    assert claims["act"] == {"sub": RUNNER}
    assert claims["task"]["approval_id"] == pending.value.approval_id


async def test_an_approval_given_under_one_parent_credential_is_not_used_under_another(
    harness: Harness,
) -> None:
    billing = agent(harness)
    parent_x = await billing.exchange(read(sensitivity="confidential"))
    parent_y = await billing.exchange(read(sensitivity="confidential"))  # same task, 2nd token
    runner = agent(harness, RUNNER)
    task = read(sensitivity="confidential", ttl=60)
    with pytest.raises(ApprovalPending) as under_x:
        await runner.delegate(parent_x, task=task)
    approved_id = under_x.value.approval_id
    async with harness.agent(ALICE) as alice:
        await ApprovalsClient.over(alice).approve(approved_id, comment="ok")

    # under Y, the same task: the grant under X is not found; an approver is asked anew
    async with runner.client() as client:
        stub = pb_grpc.CredentialServiceStub(client.channel)
        with pytest.raises(grpc.aio.AioRpcError) as under_y:
            await stub.Exchange(
                pb.ExchangeRequest(
                    task=pb.TaskDescriptor(
                        task_id=TASK_ID,
                        audience="payments-api",
                        action="read",
                        sensitivity=pb.SENSITIVITY_CONFIDENTIAL,
                        requested_ttl_seconds=60,
                    ),
                    subject_token=parent_y.token,
                ),
                timeout=5,
            )

    trailers: dict[str, Any] = dict(under_y.value.trailing_metadata() or ())  # type: ignore[arg-type]
    asked_id, decision_id = trailers["taskpass-approval-id"], trailers["taskpass-decision-id"]
    assert under_y.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert under_y.value.details() == (
        "approval required by rule(s) approval.delegated.confidential from group(s) "
        f"security-approvers (decision {decision_id}); approval id {asked_id}"
    )
    assert asked_id != approved_id
    # approvers see which parent each request was asked under
    async with harness.agent(ALICE) as alice:
        approvals = ApprovalsClient.over(alice)
        granted = await approvals.get(approved_id)
        [pending] = await approvals.list_pending()
    assert (granted.state, granted.parent_jti) == ("approved", parent_x.jti)
    assert (pending.approval_id, pending.parent_jti) == (asked_id, parent_y.jti)
    # and the grant still serves the parent it was given under, once
    child = await runner.delegate(parent_x, task=task)
    assert child.approval_id == approved_id
    assert (await verified_claims(harness, child.token))["task"]["approval_id"] == approved_id
    records = await harness.server.store.audit.read(limit=MAX_PAGE)
    [consumed] = [r.payload for r in records if r.kind == "approval_consumed"]
    assert (consumed["approval_id"], consumed["parent_jti"]) == (approved_id, parent_x.jti)


async def test_the_audit_trail_links_every_child_to_its_parent(harness: Harness) -> None:
    root, first, second = await chain(harness, depth=2)

    records = await harness.server.store.audit.read(limit=MAX_PAGE)
    issued = {r.payload["jti"]: r.payload for r in records if r.kind == "issuance"}

    assert "delegation" not in issued[root.jti]
    assert issued[first.jti]["delegation"] == {
        "parent_jti": root.jti,
        "parent_holder": BILLING_BOT,
        "principal": BILLING_BOT,
        "depth": 1,
        "chain": [tool(1), BILLING_BOT],
        "parent_rules": ["grant.payments.read"],
    }
    assert issued[second.jti]["delegation"]["parent_jti"] == first.jti
    assert issued[second.jti]["delegation"]["chain"] == [tool(2), tool(1), BILLING_BOT]
    assert issued[second.jti]["workload"]["id"] == tool(2)
    stored = await harness.server.store.credentials.get_credential(second.jti)
    assert stored is not None
    assert stored.parent_jti == first.jti
