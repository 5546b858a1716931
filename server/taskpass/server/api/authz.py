"""Authorization declared in tables (full method -> who may call), enforced before any handler.

Every RPC is attested first (see authn.py); the attested Workload is then available to the
servicer through `current_workload()`. A method that is not in any table is denied, and so is a
caller outside the groups a method names, and so is a banned identity, whatever its groups (a
banned approver or admin keeps no power; Exchange also refuses it itself, see
revocation/service.py). Denials are reported to `on_denied` (the audit log) with the reason.
The server runs this stage inside its one interceptor (api/pipeline.py).
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from taskpass.server.api.authn import PeerAttestor, authenticate
from taskpass.server.api.pipeline import Admit
from taskpass.server.errors import PermissionDenied
from taskpass.server.identity.groups import Groups
from taskpass.server.identity.workload import Workload
from taskpass.server.revocation.bans import BanList


@dataclass(frozen=True, slots=True)
class Access:
    """Who may call a method: anyone (no attestation), any attested workload, or group members."""

    public: bool = False
    groups: frozenset[str] | None = None  # None: any attested workload

    @classmethod
    def any_workload(cls) -> Access:
        return cls()

    @classmethod
    def members_of(cls, *groups: str) -> Access:
        return cls(groups=frozenset(groups))


PUBLIC = Access(public=True)
ANY_WORKLOAD = Access()

_current: contextvars.ContextVar[Workload] = contextvars.ContextVar("taskpass_workload")


def current_workload() -> Workload:
    """The attested caller of the RPC being served."""
    return _current.get()


Context = grpc.aio.ServicerContext[Any, Any]
DeniedHook = Callable[[Workload, str, str], Awaitable[None]]
"""Called with the caller, the full method and why it was refused."""


class Authorization:
    """The authorization stage: what admits a caller of each method (see the module docstring)."""

    def __init__(
        self,
        *,
        attestor: PeerAttestor,
        table: Mapping[str, Access],
        groups: Groups,
        on_denied: DeniedHook | None = None,
        bans: BanList | None = None,
    ) -> None:
        self._attestor = attestor
        self._table = dict(table)
        self._groups = groups
        self._on_denied = on_denied
        self._bans = bans

    def admission(self, method: str) -> Admit | None:
        access = self._table.get(method)
        if access is not None and access.public:
            return None
        return functools.partial(self._admit, method, access)

    async def _admit(self, method: str, access: Access | None, context: Context) -> None:
        workload = authenticate(self._attestor, context)
        _current.set(workload)  # attested: named in the access line even if refused below
        if access is None:
            raise PermissionDenied(f"{method} is not open to any caller")
        if self._bans is not None and (ban := self._bans.banned(workload.id)) is not None:
            if self._on_denied is not None:
                await self._on_denied(workload, method, f"banned by the ban on {ban.pattern}")
            self._bans.check(workload.id)  # raises: it is banned
        if access.groups is not None and not self._groups.member_of_any(workload.id, access.groups):
            if self._on_denied is not None:
                await self._on_denied(workload, method, "not in the groups that may call it")
            needed = ", ".join(sorted(access.groups))
            raise PermissionDenied(
                f"{workload.id} may not call {method.rsplit('/', 1)[-1]}: it needs membership "
                f"of {needed} (groups are set by the security team in the server config)"
            )
