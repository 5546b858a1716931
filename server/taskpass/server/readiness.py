"""Is this server able to issue credentials right now? A store ping and a signing-key check.

- The store answers a read (the revocation head) within the timeout. For SQLite the database
  file is also opened afresh, read-only: the server's own connections hold the file open, so
  they keep answering from a file that was deleted, replaced or made unreadable, which a
  restart would then fail on.
- The active signing key is published in the JWKS and signs.

The gRPC health service, /healthz and the `taskpass_ready` gauge all report this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from taskpass.server.errors import TaskpassError
from taskpass.server.issuer.keys import KeyRing, KeyState
from taskpass.server.store.base import Store
from taskpass.server.store.sqlite import SqliteStore

log = logging.getLogger("taskpass.health")

DEFAULT_TIMEOUT = 2.0
_PROBE = b"taskpass readiness probe"


@dataclass(frozen=True, slots=True)
class Readiness:
    store: str | None
    """None when the store answered, else why not."""
    keys: str | None
    """None when a signing key is active, else why not."""

    @property
    def ok(self) -> bool:
        return self.store is None and self.keys is None

    def describe(self) -> str:
        if self.ok:
            return "ready"
        return "; ".join(p for p in (self.store, self.keys) if p is not None)


def _open_sqlite_file(path: Path) -> None:
    uri = path.resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=1.0)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
    finally:
        conn.close()


class ReadinessProbe:
    def __init__(self, *, store: Store, keys: KeyRing, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._store = store
        self._keys = keys
        self._timeout = timeout
        self._running: asyncio.Task[Readiness] | None = None

    async def check(self) -> Readiness:
        """Run the checks; concurrent callers share one run (a hammered /healthz costs one)."""
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._check())
        return await asyncio.shield(self._running)

    async def _check(self) -> Readiness:
        return Readiness(store=await self._store_problem(), keys=self._key_problem())

    async def _store_problem(self) -> str | None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._store.revocations.current_seq()
                if isinstance(self._store, SqliteStore):
                    await asyncio.to_thread(_open_sqlite_file, self._store.path)
        except TimeoutError:
            return f"store did not answer within {self._timeout:g} s"
        except TaskpassError as error:
            return f"store: {error.message}"
        except (sqlite3.Error, OSError) as error:
            return f"store: the SQLite database file cannot be opened ({error})"
        except Exception as error:  # whatever a broken backend raises: not ready, say what
            log.warning("store readiness check failed", exc_info=error)
            return f"store: the check failed ({type(error).__name__}); see the server log"
        return None

    def _key_problem(self) -> str | None:
        active = self._keys.active
        if active.state is not KeyState.ACTIVE:
            return f"signing key {active.kid} is {active.state.value}, not active"
        if not any(k.get("kid") == active.kid for k in self._keys.jwks().get("keys", ())):
            return f"signing key {active.kid} is not published in the JWKS"
        try:
            active.sign(_PROBE)
        except Exception:  # an unusable private key; its text stays out of the answer
            return f"signing key {active.kid} cannot sign"
        return None

    async def close(self) -> None:
        if self._running is not None and not self._running.done():
            self._running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._running
