from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence

import pytest

from taskpass.client.errors import (
    Denied,
    FailedPrecondition,
    InvalidRequest,
    StoreCorrupted,
    TaskpassClientError,
    Unavailable,
)
from taskpass.client.models import Task, TaskCredential
from taskpass.client.task_handle import TaskHandle
from taskpass.server.clock import FixedClock

TASK = Task(task_id="t-42", audience="payments-api", action="read")
LIFETIME = dt.timedelta(minutes=10)


class FakeTasks:
    """The two calls a task handle makes, recorded; `exchange_error`/`complete_error` fail them."""

    def __init__(self, clock: FixedClock) -> None:
        self.clock = clock
        self.exchanged: list[Task] = []
        self.completed: list[str] = []
        self.exchange_error: TaskpassClientError | None = None
        self.complete_error: TaskpassClientError | None = None
        self.gate: asyncio.Event | None = None
        self.waits: list[dt.timedelta | None] = []
        self.parents: list[tuple[str | None, tuple[str, ...]]] = []

    async def exchange(
        self,
        task: Task,
        *,
        wait_for_approval: dt.timedelta | None = None,
        on_behalf_of: str | None = None,
        scopes: Sequence[str] = (),
    ) -> TaskCredential:
        self.exchanged.append(task)
        self.waits.append(wait_for_approval)
        self.parents.append((on_behalf_of, tuple(scopes)))
        if self.gate is not None:
            await self.gate.wait()
        if self.exchange_error is not None:
            raise self.exchange_error
        n, now = len(self.exchanged), self.clock.now()
        return TaskCredential(
            token=f"token-{n}",
            jti=f"jti-{n}",
            issued_at=now,
            expires_at=now + LIFETIME,
            scopes=("payments:read",),
            decision_id=f"dec-{n}",
            policy_version="sha256:x",
            matched_rules=("grant",),
        )

    async def complete_task(self, task_id: str) -> tuple[str, ...]:
        self.completed.append(task_id)
        if self.complete_error is not None:
            raise self.complete_error
        return tuple(f"jti-{n + 1}" for n in range(len(self.exchanged)))


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC))


@pytest.fixture
def tasks(clock: FixedClock) -> FakeTasks:
    return FakeTasks(clock)


def handle(tasks: FakeTasks, clock: FixedClock, **options: object) -> TaskHandle:
    return TaskHandle(tasks, TASK, clock=clock, **options)  # type: ignore[arg-type]


async def test_the_block_exchanges_on_entry_and_completes_the_task_on_exit(
    tasks: FakeTasks, clock: FixedClock
) -> None:
    async with handle(tasks, clock) as task:
        assert task.token == "token-1"
        assert tasks.completed == []
    assert tasks.exchanged == [TASK]
    assert tasks.completed == ["t-42"]
    assert task.revoked_jtis == ("jti-1",)


async def test_the_task_is_completed_when_the_body_raises(
    tasks: FakeTasks, clock: FixedClock
) -> None:
    with pytest.raises(ZeroDivisionError):
        async with handle(tasks, clock):
            _ = 1 / 0
    assert tasks.completed == ["t-42"]


async def test_the_task_is_completed_when_the_body_is_cancelled(
    tasks: FakeTasks, clock: FixedClock
) -> None:
    entered = asyncio.Event()

    async def body() -> None:
        async with handle(tasks, clock):
            entered.set()
            await asyncio.Event().wait()  # until cancelled

    running = asyncio.create_task(body())
    await entered.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert tasks.completed == ["t-42"]


async def test_a_failed_completion_is_raised_when_the_body_succeeded(
    tasks: FakeTasks, clock: FixedClock
) -> None:
    tasks.complete_error = Unavailable("server down")
    with pytest.raises(Unavailable, match="server down"):
        async with handle(tasks, clock):
            pass


async def test_a_failed_completion_never_hides_the_bodys_own_error(
    tasks: FakeTasks, clock: FixedClock
) -> None:
    tasks.complete_error = Unavailable("server down")
    with pytest.raises(KeyError) as info:
        async with handle(tasks, clock):
            raise KeyError("the body's error")
    assert any("completing task 't-42' failed" in note for note in info.value.__notes__)


async def test_a_refused_exchange_raises_and_completes_nothing(
    tasks: FakeTasks, clock: FixedClock
) -> None:
    tasks.exchange_error = Denied("denied by policy", details={"decision_id": "dec-1"})
    with pytest.raises(Denied):
        async with handle(tasks, clock):
            pytest.fail("the body must not run")
    assert tasks.completed == []


async def test_the_credential_is_reused_while_enough_of_its_lifetime_remains(
    tasks: FakeTasks, clock: FixedClock
) -> None:
    async with handle(tasks, clock) as task:
        clock.advance(dt.timedelta(minutes=7, seconds=29))  # 2m31s of 10m left: above 25%
        assert (await task.credential()).token == "token-1"
    assert len(tasks.exchanged) == 1


async def test_the_credential_is_re_exchanged_for_the_same_task_near_expiry(
    tasks: FakeTasks, clock: FixedClock
) -> None:
    async with handle(tasks, clock) as task:
        clock.advance(dt.timedelta(minutes=7, seconds=30))  # 25% left
        refreshed = await task.credential()
        assert refreshed.token == task.token == "token-2"
        assert refreshed.expires_at == clock.now() + LIFETIME
    assert tasks.exchanged == [TASK, TASK]
    assert task.revoked_jtis == ("jti-1", "jti-2")


async def test_the_refresh_point_is_configurable(tasks: FakeTasks, clock: FixedClock) -> None:
    async with handle(tasks, clock, refresh_below=0.5) as task:
        clock.advance(dt.timedelta(minutes=5))
        assert (await task.credential()).token == "token-2"


async def test_concurrent_callers_share_one_refresh(tasks: FakeTasks, clock: FixedClock) -> None:
    async with handle(tasks, clock) as task:
        clock.advance(dt.timedelta(minutes=9))
        tasks.gate = asyncio.Event()
        waiting = [asyncio.create_task(task.credential()) for _ in range(5)]
        await asyncio.sleep(0)  # let them all reach the refresh
        tasks.gate.set()
        tokens = {c.token for c in await asyncio.gather(*waiting)}
    assert tokens == {"token-2"}
    assert len(tasks.exchanged) == 2


async def test_an_unreachable_server_leaves_the_still_valid_credential_in_use(
    tasks: FakeTasks, clock: FixedClock
) -> None:
    async with handle(tasks, clock) as task:
        clock.advance(dt.timedelta(minutes=9))
        tasks.exchange_error = Unavailable("server down")
        assert (await task.credential()).token == "token-1"
        clock.advance(dt.timedelta(minutes=1))  # now expired
        with pytest.raises(Unavailable):
            await task.credential()
        tasks.exchange_error = None


async def test_a_refresh_the_servers_database_cannot_answer_is_raised_not_papered_over(
    tasks: FakeTasks, clock: FixedClock
) -> None:
    # Not Unavailable: the server answered, and will answer the same until its operator restores
    # the row, so the still-valid credential is not handed out as if the server were just down.
    async with handle(tasks, clock) as task:
        clock.advance(dt.timedelta(minutes=9))
        tasks.exchange_error = StoreCorrupted("store corrupted: column state of table tasks ...")
        with pytest.raises(StoreCorrupted, match="column state of table tasks"):
            await task.credential()
        tasks.exchange_error = None


async def test_a_refresh_policy_refuses_is_raised(tasks: FakeTasks, clock: FixedClock) -> None:
    async with handle(tasks, clock) as task:
        clock.advance(dt.timedelta(minutes=9))
        tasks.exchange_error = Denied("denied by policy")
        with pytest.raises(Denied):
            await task.credential()
        tasks.exchange_error = None


async def test_a_completed_task_gives_no_credential(tasks: FakeTasks, clock: FixedClock) -> None:
    async with handle(tasks, clock) as task:
        pass
    with pytest.raises(FailedPrecondition, match="completed"):
        await task.credential()


async def test_a_handle_used_outside_its_block_says_how_to_use_it(
    tasks: FakeTasks, clock: FixedClock
) -> None:
    with pytest.raises(FailedPrecondition, match="async with"):
        _ = handle(tasks, clock).token


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1], ids=["zero", "one", "negative"])
def test_the_refresh_point_must_be_a_fraction_of_the_lifetime(
    tasks: FakeTasks, clock: FixedClock, fraction: float
) -> None:
    with pytest.raises(InvalidRequest, match="refresh_below"):
        handle(tasks, clock, refresh_below=fraction)


async def test_only_the_entry_exchange_waits_for_an_approval(
    tasks: FakeTasks, clock: FixedClock
) -> None:
    wait = dt.timedelta(minutes=5)
    async with handle(tasks, clock, wait_for_approval=wait) as task:
        clock.advance(dt.timedelta(minutes=9))
        await task.credential()
    assert tasks.waits == [wait, None]


async def test_a_sub_agents_entry_and_every_refresh_delegate_under_the_same_parent(
    tasks: FakeTasks, clock: FixedClock
) -> None:
    async with handle(tasks, clock, on_behalf_of="parent-token", scopes=["payments:read"]) as task:
        clock.advance(dt.timedelta(minutes=9))
        await task.credential()
        clock.advance(dt.timedelta(minutes=9))
        await task.credential()

    assert tasks.parents == [("parent-token", ("payments:read",))] * 3
    assert tasks.exchanged == [TASK] * 3
    assert tasks.completed == ["t-42"]


async def test_a_task_of_its_own_never_delegates(tasks: FakeTasks, clock: FixedClock) -> None:
    async with handle(tasks, clock) as task:
        clock.advance(dt.timedelta(minutes=9))
        await task.credential()

    assert tasks.parents == [(None, ()), (None, ())]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            {"on_behalf_of": " "},
            "on_behalf_of: the parent's token is empty; pass the token your parent agent "
            "received, or leave on_behalf_of out for a task of your own",
            id="empty-parent-token",
        ),
        pytest.param(
            {"on_behalf_of": "parent-token", "scopes": "payments:read"},
            "scopes: a list of scopes, not one string (scopes=['payments:read'])",
            id="scopes-as-one-string",
        ),
        pytest.param(
            {"scopes": ["payments:read"]},
            "scopes: narrow scopes only when delegating: pass the parent's token as on_behalf_of",
            id="scopes-without-parent",
        ),
    ],
)
def test_a_bad_delegation_is_refused_before_any_exchange(
    tasks: FakeTasks, clock: FixedClock, options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        handle(tasks, clock, **options)

    assert refused.value.message == message
    assert refused.value.field == message.split(":")[0]
    assert tasks.exchanged == []
