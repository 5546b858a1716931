"""TaskpassClient.exchange refuses a delegation it would send wrong before any call."""

from __future__ import annotations

import grpc
import pytest

from taskpass.client import TaskpassClient
from taskpass.client.errors import InvalidRequest
from taskpass.client.models import Task

TASK = Task(task_id="t-42", audience="payments-api", action="read")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        pytest.param({"on_behalf_of": ""}, "on_behalf_of", id="empty-parent-token"),
        pytest.param(
            {"on_behalf_of": "parent-token", "scopes": "payments:read"},
            "scopes",
            id="scopes-as-one-string",
        ),
        pytest.param({"scopes": ["payments:read"]}, "scopes", id="scopes-without-parent"),
    ],
)
async def test_a_bad_delegation_is_refused_before_any_call(
    options: dict[str, object], field: str
) -> None:
    # Nothing listens here: a call would fail as Unavailable, not as InvalidRequest.
    async with TaskpassClient(grpc.aio.insecure_channel("127.0.0.1:9"), timeout=5) as client:
        with pytest.raises(InvalidRequest) as refused:
            await client.exchange(TASK, **options)  # type: ignore[arg-type]

    assert refused.value.field == field
