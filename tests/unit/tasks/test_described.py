"""DescribedTask gives the exchange the descriptor's dict and digest, equal to the descriptor's."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskpass.server.tasks.described import DescribedTask
from taskpass.server.tasks.descriptor import Sensitivity, TaskDescriptor

_token = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,20}", fullmatch=True)
_text = st.text(st.characters(categories=("L", "N", "P", "S")) | st.just(" "), max_size=40)


@given(
    task_id=_token,
    audience=_token,
    action=_token,
    sensitivity=st.sampled_from(Sensitivity),
    ttl=st.integers(min_value=1, max_value=24 * 3600),
    tool=_token | st.just(""),
    reason=_text,
    deadline=st.none() | st.datetimes(timezones=st.just(dt.UTC)),
    attributes=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_.-]{0,10}", fullmatch=True), _text, max_size=32
    ),
)
def test_the_digest_and_fields_are_the_descriptors_own(
    task_id: str,
    audience: str,
    action: str,
    sensitivity: Sensitivity,
    ttl: int,
    tool: str,
    reason: str,
    deadline: dt.datetime | None,
    attributes: dict[str, str],
) -> None:
    task = TaskDescriptor(
        task_id=task_id,
        audience=audience,
        action=action,
        sensitivity=sensitivity,
        requested_ttl=dt.timedelta(seconds=ttl),
        tool=tool,
        reason=reason,
        deadline=deadline,
        attributes=attributes,
    )

    described = DescribedTask.of(task)

    assert described.digest == task.digest()
    assert described.fields == task.as_dict()


BASE = TaskDescriptor(
    task_id="t-1",
    audience="payments-api",
    action="read",
    sensitivity=Sensitivity.INTERNAL,
    requested_ttl=dt.timedelta(minutes=5),
    attributes={"ticket": "1"},
    reason="a reason",
)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"action": "write"}, id="action"),
        pytest.param({"attributes": {"ticket": "2"}}, id="attributes"),
        pytest.param({"reason": "other reason"}, id="reason"),
        pytest.param({"requested_ttl": dt.timedelta(minutes=6)}, id="ttl"),
    ],
)
def test_a_different_task_has_a_different_digest(change: dict[str, Any]) -> None:
    other = dataclasses.replace(BASE, **change)

    assert DescribedTask.of(other).digest != DescribedTask.of(BASE).digest
