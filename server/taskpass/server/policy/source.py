"""The policy in force: loaded at startup, replaced by a signed document, never by a bad one.

A new document arrives from an admin's LoadPolicy call or from the policy file (and its `.sig`)
changing on disk. It is accepted only when a configured signer's key verifies it (unless dev
mode accepts unsigned documents, loudly), it compiles, and every approver group it names exists
in the bootstrap config. Otherwise the policy in force stays, and the refusal is logged and
audited. Decisions read `current()`: one attribute load, so a swap never blocks the hot path.

The file stays the durable source: a document loaded over the API is in force on this server
until the file changes or the server restarts. To make it permanent, install the same signed
file; the watcher then finds the same document and keeps it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from taskpass.server.clock import Clock
from taskpass.server.errors import ConfigError
from taskpass.server.identity.workload import Workload
from taskpass.server.policy.engine import PolicyEngine
from taskpass.server.policy.safe_yaml import MAX_DOCUMENT_BYTES, read_bounded
from taskpass.server.policy.signing import (
    MAX_SIGNATURE_BYTES,
    PolicyVerifier,
    signature_path,
)
from taskpass.server.store.base import AuditLog
from taskpass.server.store.records import AuditEntry, JsonObject

log = logging.getLogger("taskpass.policy")

SERVER_ACTOR = "taskpass-server"
"""The audit actor of loads nobody asked for over the API: startup and file changes."""


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """A policy in force and how it got there."""

    engine: PolicyEngine
    document: bytes
    signer: str | None
    """key_id of the signer whose key verified it; None when accepted unsigned (dev mode)."""
    source: str
    loaded_by: str
    loaded_at: dt.datetime

    @property
    def version(self) -> str:
        return self.engine.version


# (mtime_ns, size) of the policy file and of its signature (None when absent)
_Stamp = tuple[tuple[int, int] | None, tuple[int, int] | None]


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class ReloadablePolicy:
    """A PolicySource whose document can be replaced at run time by a verified one."""

    def __init__(
        self,
        *,
        file: Path,
        verifier: PolicyVerifier,
        require_signature: bool,
        known_groups: Collection[str],
        audit: AuditLog,
        clock: Clock,
    ) -> None:
        if require_signature and not verifier.signers:
            raise ConfigError(
                "config: policy signatures are required but policy.signers is empty: list the "
                "public keys (PEM) of the keys that sign policy (only dev_mode accepts unsigned)"
            )
        self._file = file
        self._sig_file = signature_path(file)
        self._verifier = verifier
        self._require_signature = require_signature
        self._known_groups = frozenset(known_groups)
        self._audit = audit
        self._clock = clock
        self._loaded: LoadedPolicy | None = None
        self._stamp: _Stamp = (None, None)
        self._lock = asyncio.Lock()

    # -- reads -------------------------------------------------------------------------------

    def current(self) -> PolicyEngine:
        loaded = self._loaded
        if loaded is None:
            raise RuntimeError("no policy loaded yet: call start() first")
        return loaded.engine

    @property
    def loaded(self) -> LoadedPolicy:
        if self._loaded is None:
            raise RuntimeError("no policy loaded yet: call start() first")
        return self._loaded

    # -- loads -------------------------------------------------------------------------------

    async def start(self) -> LoadedPolicy:
        """Load the policy file at startup. A bad or unsigned file stops the server here."""
        async with self._lock:
            stamp, document, signature = self._read_files()
            loaded = self._accept(document, signature, source=str(self._file), by=SERVER_ACTOR)
            await self._record(loaded, previous=None, by_workload=None, how="startup")
            self._install(loaded, stamp)
            return loaded

    async def load(self, document: bytes, signature: bytes | None, *, by: Workload) -> LoadedPolicy:
        """An admin's new document: verified, compiled, then in force. A refusal keeps the
        policy in force. (The policy file is left alone: see the module docstring.)"""
        async with self._lock:
            try:
                loaded = self._accept(
                    document, signature, source=f"document from {by.id}", by=by.id
                )
            except ConfigError as error:
                await self._refused(error, by_workload=by, how="api")
                raise
            await self._record(loaded, previous=self._loaded, by_workload=by, how="api")
            self._install(loaded, self._stamp)
            return loaded

    async def reload_if_changed(self) -> LoadedPolicy | None:
        """Load the policy file again if it or its signature changed since last seen. Returns
        the new policy, or None when nothing changed or the new file was refused (logged and
        audited; it is not retried until the files change again)."""
        async with self._lock:
            stamp = (_stat(self._file), _stat(self._sig_file))
            if stamp == self._stamp:
                return None
            try:
                stamp, document, signature = await asyncio.to_thread(self._read_files)
            except ConfigError as error:
                self._stamp = stamp
                await self._refused(error, by_workload=None, how="file")
                return None
            current = self._loaded
            if current is not None and current.document == document:
                self._stamp = stamp  # touched, or re-signed: the same policy stays
                return None
            try:
                loaded = self._accept(document, signature, source=str(self._file), by=SERVER_ACTOR)
            except ConfigError as error:
                self._stamp = stamp
                await self._refused(error, by_workload=None, how="file")
                return None
            await self._record(loaded, previous=current, by_workload=None, how="file")
            self._install(loaded, stamp)
            return loaded

    async def watch(self, interval: float) -> None:
        """Check the files every `interval` seconds, for the server's lifetime."""
        while True:
            await asyncio.sleep(interval)
            await self.reload_if_changed()

    # -- internals ---------------------------------------------------------------------------

    def _read_files(self) -> tuple[_Stamp, bytes, bytes | None]:
        # stat before reading: a change racing the read shows up as another change next time
        stamp = (_stat(self._file), _stat(self._sig_file))
        document = read_bounded(self._file)
        signature = None
        if stamp[1] is not None:
            try:
                with self._sig_file.open("rb") as handle:
                    signature = handle.read(MAX_SIGNATURE_BYTES + 1)
            except FileNotFoundError:
                signature = None
            except OSError as exc:
                raise ConfigError(f"{self._sig_file}: cannot read ({exc.strerror})") from exc
        return stamp, document, signature

    def _accept(
        self, document: bytes, signature: bytes | None, *, source: str, by: str
    ) -> LoadedPolicy:
        if len(document) > MAX_DOCUMENT_BYTES:
            raise ConfigError(f"{source}: larger than {MAX_DOCUMENT_BYTES} bytes")
        signer: str | None = None
        if self._verifier.signers and (signature is not None or self._require_signature):
            signer = self._verifier.verify(document, signature, source=source).key_id
        elif self._require_signature:  # unreachable: the constructor refuses it
            raise ConfigError(f"{source}: unsigned policy refused")
        engine = PolicyEngine.from_yaml(document, source=source)
        unknown = sorted(
            {group for rule in engine.document.rules for group in rule.approvers}
            - self._known_groups
        )
        if unknown:
            raise ConfigError(
                f"{source}: approver group(s) {', '.join(unknown)} are not defined in the "
                "server config's [groups]: nobody could ever approve; fix the rule or the config"
            )
        if signer is None:
            log.warning("DEV MODE: policy %s accepted UNSIGNED from %s", engine.version, source)
        return LoadedPolicy(
            engine=engine,
            document=document,
            signer=signer,
            source=source,
            loaded_by=by,
            loaded_at=self._clock.now(),
        )

    def _install(self, loaded: LoadedPolicy, stamp: _Stamp) -> None:
        self._loaded = loaded
        self._stamp = stamp
        log.info(
            "policy %s (%s) in force, %d rules, signer %s, from %s",
            loaded.version,
            loaded.engine.document.version_label or "no label",
            len(loaded.engine.document.rules),
            loaded.signer or "none (unsigned, dev mode)",
            loaded.source,
        )

    async def _record(
        self,
        loaded: LoadedPolicy,
        *,
        previous: LoadedPolicy | None,
        by_workload: Workload | None,
        how: str,
    ) -> None:
        document = loaded.engine.document
        payload: JsonObject = {
            "how": how,
            "policy_version": loaded.version,
            "label": document.version_label,
            "rules": len(document.rules),
            "signer": loaded.signer,
            "source": loaded.source,
            "previous_version": previous.version if previous else None,
        }
        if by_workload is not None:
            payload["workload"] = _who(by_workload)
        await self._audit.append(
            AuditEntry(
                kind="policy_loaded",
                actor=by_workload.id if by_workload else SERVER_ACTOR,
                at=self._clock.now(),
                payload=payload,
            )
        )

    async def _refused(self, error: ConfigError, *, by_workload: Workload | None, how: str) -> None:
        log.error("policy refused, the one in force stays: %s", error.message)
        payload: JsonObject = {
            "how": how,
            "reason": error.message,
            "kept_version": self._loaded.version if self._loaded else None,
        }
        if by_workload is not None:
            payload["workload"] = _who(by_workload)
        await self._audit.append(
            AuditEntry(
                kind="policy_refused",
                actor=by_workload.id if by_workload else SERVER_ACTOR,
                at=self._clock.now(),
                payload=payload,
            )
        )


def _who(workload: Workload) -> JsonObject:
    return {
        "id": workload.id,
        "method": workload.method.value,
        "cert_sha256": workload.cert_thumbprint,
    }
