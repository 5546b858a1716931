"""Other replicas' commits, turned into this replica's wake-ups.

A store that says what changed (base.ChangeNotifier: PostgreSQL's NOTIFY payload) calls
`ReplicaChanges` with each StoreChange; each part goes to whoever re-reads that table:

    events     -> the revocation fan-out (its Watch streams get the event)
    approvals  -> the approval signals (a waiting exchange completes, approvers' watches update)
    keys       -> the shared JWKS (a token signed by the other replica verifies here)

`everything` (the notification connection was re-made, so commits went unannounced) wakes all
three, and every approval waiter and watcher. A wake-up is only a prompt to re-read the store,
the one source of truth, so a duplicate costs a read and a missed one at most a poll interval.
"""

from __future__ import annotations

from collections.abc import Callable

from taskpass.server.approvals.signals import ApprovalSignals
from taskpass.server.store.base import StoreChange


class ReplicaChanges:
    def __init__(
        self,
        *,
        revocations: Callable[[], None],
        approvals: ApprovalSignals,
        keys: Callable[[], None],
    ) -> None:
        self._revocations = revocations
        self._approvals = approvals
        self._keys = keys

    def __call__(self, change: StoreChange) -> None:
        if change.everything:
            self._revocations()
            self._approvals.notify_all()
            self._keys()
            return
        if change.events:
            self._revocations()
        for approval_id in sorted(change.approvals):
            self._approvals.notify(approval_id)
        if change.keys:
            self._keys()
