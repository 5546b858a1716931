"""A task in progress: exchange on entry, a fresh credential on demand, CompleteTask on exit.

    async with client.task("t-42", audience="payments-api", action="read") as task:
        await call_api(task.token)                       # the credential from the entry exchange
        ...                                              # a long task:
        await call_api((await task.credential()).token)  # re-exchanged when nearly expired

The just-in-time pattern as the easy path: the credential exists only inside the block, and the
task is completed (every credential of it revoked) when the block ends, also when it raises or is
cancelled. A refresh is a new exchange of the same task descriptor, so policy decides again and
the server caps the lifetime again (grant, caps, deadline, SVID expiry): nothing outlives what
policy allows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from types import TracebackType
from typing import Protocol

from taskpass.client.clock import Clock, SystemClock
from taskpass.client.errors import FailedPrecondition, InvalidRequest, Unavailable
from taskpass.client.models import Task, TaskCredential

log = logging.getLogger(__name__)


class TaskClient(Protocol):
    """What a task handle needs of the client."""

    async def exchange(
        self, task: Task, *, wait_for_approval: dt.timedelta | None = None
    ) -> TaskCredential: ...

    async def complete_task(self, task_id: str) -> tuple[str, ...]: ...


class TaskHandle:
    """One task's credential and lifecycle; made by `TaskpassClient.task(...)`.

    `refresh_below` is the fraction of a credential's lifetime left at which `credential()`
    re-exchanges (0.25: a 10-minute credential is renewed once under 2.5 minutes remain).
    `wait_for_approval` lets the entry exchange wait that long for an approver when policy asks
    for one; a refresh never waits: an approval is single-use, so a task gated by approval
    raises ApprovalPending when its credential would need renewing.
    """

    def __init__(
        self,
        client: TaskClient,
        task: Task,
        *,
        refresh_below: float = 0.25,
        wait_for_approval: dt.timedelta | None = None,
        complete_on_exit: bool = True,
        clock: Clock | None = None,
    ) -> None:
        if not 0.0 < refresh_below < 1.0:
            raise InvalidRequest("refresh_below: a fraction of the lifetime, between 0 and 1")
        self._client = client
        self._task = task
        self._refresh_below = refresh_below
        self._wait_for_approval = wait_for_approval
        self._complete_on_exit = complete_on_exit
        self._clock = clock or SystemClock()
        self._current: TaskCredential | None = None
        self._completed = False
        self._revoked: tuple[str, ...] = ()
        self._lock = asyncio.Lock()

    @property
    def task(self) -> Task:
        return self._task

    @property
    def current(self) -> TaskCredential:
        """The latest credential, as it is (no refresh): use `credential()` in long tasks."""
        if self._current is None:
            raise FailedPrecondition("the task has not started: use `async with client.task(...)`")
        return self._current

    @property
    def token(self) -> str:
        """The latest credential's token (no refresh)."""
        return self.current.token

    @property
    def revoked_jtis(self) -> tuple[str, ...]:
        """The credentials CompleteTask revoked, once the block has ended."""
        return self._revoked

    async def __aenter__(self) -> TaskHandle:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._complete_on_exit or self._current is None:
            return
        try:
            # Shielded: a cancelled task still ends its credentials on the way out.
            await asyncio.shield(self.complete())
        except Exception as error:
            if exc is None:
                raise
            # Never hide the body's own exception; say that the credentials may outlive it.
            log.warning("task %s: CompleteTask failed: %s", self._task.task_id, error)
            exc.add_note(
                f"taskpass: completing task {self._task.task_id!r} failed ({error}); its "
                "credentials stay valid until they expire"
            )

    async def start(self) -> TaskCredential:
        """The first exchange (done by `async with`)."""
        if self._current is not None:
            raise FailedPrecondition(f"task {self._task.task_id!r} has already started")
        self._current = await self._client.exchange(
            self._task, wait_for_approval=self._wait_for_approval
        )
        return self._current

    async def credential(self) -> TaskCredential:
        """The current credential, re-exchanged first if less than `refresh_below` of its
        lifetime remains. While the server is unreachable a still-valid credential is returned;
        any other refusal (denied, task completed, ...) is raised: policy has the last word."""
        current = self.current
        if self._completed:
            raise FailedPrecondition(
                f"task {self._task.task_id!r} is completed: its credentials are revoked"
            )
        if not self._needs_refresh(current):
            return current
        async with self._lock:
            if self._current is not current:
                return self.current  # refreshed by a concurrent caller while we waited
            try:
                self._current = await self._client.exchange(self._task)
            except Unavailable as error:
                if self._clock.now() >= current.expires_at:
                    raise
                log.warning(
                    "task %s: refresh failed, using the current credential (expires %s): %s",
                    self._task.task_id,
                    current.expires_at.isoformat(),
                    error.message,
                )
                return current
            return self._current

    async def complete(self) -> tuple[str, ...]:
        """CompleteTask now (done by `async with` on exit). Returns the revoked jtis."""
        if self._completed:
            return self._revoked
        self._revoked = await self._client.complete_task(self._task.task_id)
        self._completed = True
        return self._revoked

    def _needs_refresh(self, credential: TaskCredential) -> bool:
        lifetime = credential.expires_at - credential.issued_at
        remaining = credential.expires_at - self._clock.now()
        return remaining <= max(lifetime, dt.timedelta(0)) * self._refresh_below
