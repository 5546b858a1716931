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

A sub-agent runs its part of a parent agent's task the same way, under the parent's token:

    async with client.task("t-42", audience="payments-api", action="read",
                           on_behalf_of=parent_token, scopes=["payments:read"]) as task:
        ...

Every exchange of that handle, the entry one and each refresh, is a delegation under that same
parent token (RFC 8693), so a refreshed credential is still the sub-agent's own, still within the
parent's scopes and lifetime; once the parent credential has expired or been revoked, a refresh
is refused (PermissionDenied) and the sub-agent's part ends with it. On exit the sub-agent's own
task is completed: its credentials (and any it delegated further) are revoked, the parent's are
not.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Protocol

from taskpass.client.clock import Clock, SystemClock
from taskpass.client.errors import FailedPrecondition, InvalidRequest, Unavailable
from taskpass.client.models import Task, TaskCredential

log = logging.getLogger(__name__)


class TaskClient(Protocol):
    """What a task handle needs of the client."""

    async def exchange(
        self,
        task: Task,
        *,
        wait_for_approval: dt.timedelta | None = None,
        on_behalf_of: str | None = None,
        scopes: Sequence[str] = (),
    ) -> TaskCredential: ...

    async def complete_task(self, task_id: str) -> tuple[str, ...]: ...


class TaskHandle:
    """One task's credential and lifecycle; made by `TaskpassClient.task(...)`.

    `refresh_below` is the fraction of a credential's lifetime left at which `credential()`
    re-exchanges (0.25: a 10-minute credential is renewed once under 2.5 minutes remain).
    `wait_for_approval` lets the entry exchange wait that long for an approver when policy asks
    for one; a refresh never waits: an approval is single-use, so a task gated by approval
    raises ApprovalPending when its credential would need renewing.
    `on_behalf_of` makes every exchange of the handle a delegation under that parent token, for
    at most `scopes` of the parent's (all the policy allows when empty); `scopes` only narrow a
    delegation, so they need `on_behalf_of`.
    """

    def __init__(
        self,
        client: TaskClient,
        task: Task,
        *,
        refresh_below: float = 0.25,
        wait_for_approval: dt.timedelta | None = None,
        on_behalf_of: str | None = None,
        scopes: Sequence[str] = (),
        complete_on_exit: bool = True,
        clock: Clock | None = None,
    ) -> None:
        if not 0.0 < refresh_below < 1.0:
            raise InvalidRequest("refresh_below: a fraction of the lifetime, between 0 and 1")
        check_delegation(on_behalf_of, scopes)
        self._client = client
        self._task = task
        self._on_behalf_of = on_behalf_of
        self._scopes = tuple(scopes)
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
            self._task,
            wait_for_approval=self._wait_for_approval,
            on_behalf_of=self._on_behalf_of,
            scopes=self._scopes,
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
                # the same parent every time: a refresh stays a delegation under it
                self._current = await self._client.exchange(
                    self._task, on_behalf_of=self._on_behalf_of, scopes=self._scopes
                )
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


def check_delegation(on_behalf_of: str | None, scopes: Sequence[str]) -> None:
    """Refuse before any call what the server would refuse, or silently misread: every
    `TaskpassClient.exchange` checks this, and a TaskHandle when it is made."""
    if on_behalf_of is not None and not on_behalf_of.strip():
        # an unset variable must not turn a delegation into an exchange without a parent
        raise InvalidRequest(
            "on_behalf_of: the parent's token is empty; pass the token your parent agent "
            "received, or leave on_behalf_of out for a task of your own",
            details={"field": "on_behalf_of"},
        )
    if isinstance(scopes, str):
        raise InvalidRequest(
            f"scopes: a list of scopes, not one string (scopes=[{scopes!r}])",
            details={"field": "scopes"},
        )
    if scopes and on_behalf_of is None:
        raise InvalidRequest(
            "scopes: narrow scopes only when delegating: pass the parent's token as on_behalf_of",
            details={"field": "scopes"},
        )
