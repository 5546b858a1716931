"""The approver's view of an approval: what the SDK and the CLI line show of a request."""

from __future__ import annotations

import datetime as dt

import pytest

from taskpass._proto.v1 import approval_pb2 as pb
from taskpass._proto.v1 import credential_pb2 as credential_pb
from taskpass.client.approvals import Approval
from taskpass.client.cli_approvals import summary

CREATED = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def message(**changes: object) -> pb.Approval:
    m = pb.Approval(
        approval_id="apr_1",
        state=pb.APPROVAL_STATE_PENDING,
        requester="spiffe://example.org/tools/runner",
        attestation_method="x509-svid",
        task=credential_pb.TaskDescriptor(
            task_id="t-1",
            audience="payments-api",
            action="read",
            sensitivity=credential_pb.SENSITIVITY_CONFIDENTIAL,
            requested_ttl_seconds=60,
        ),
        task_digest="digest",
        scopes=["payments:read"],
        ttl_seconds=60,
        rules=["approval.delegated.confidential"],
        approver_groups=["security-approvers"],
        **changes,  # type: ignore[arg-type]
    )
    m.created_at.FromDatetime(CREATED)
    m.expires_at.FromDatetime(CREATED + dt.timedelta(minutes=15))
    return m


def test_a_delegated_request_shows_the_parent_credential_it_was_asked_under() -> None:
    approval = Approval.from_proto(message(parent_jti="jti-parent"))

    assert approval.parent_jti == "jti-parent"
    assert approval.as_json()["parent_jti"] == "jti-parent"
    assert summary(approval).startswith(
        "[pending] apr_1: spiffe://example.org/tools/runner (x509-svid) under parent credential "
        "jti-parent asks to read payments-api "
    )


@pytest.mark.parametrize("changes", [{}, {"parent_jti": ""}], ids=["absent", "empty"])
def test_a_request_without_a_parent_shows_none(changes: dict[str, object]) -> None:
    approval = Approval.from_proto(message(**changes))

    assert approval.parent_jti == ""
    assert approval.as_json()["parent_jti"] is None
    assert "parent" not in summary(approval)
