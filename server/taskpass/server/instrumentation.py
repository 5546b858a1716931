"""Wrappers that measure domain objects for the metrics, so the objects themselves stay unaware.

The composition root (app.py) hands these to the components in place of the plain objects:
- TimedPolicy: the policy source whose decisions are timed (policy evaluation time);
- CountingAttestor: the attestor whose failures are counted by the rule that failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from taskpass.server.errors import AttestationFailed
from taskpass.server.identity.workload import Workload
from taskpass.server.policy.decision import Decision
from taskpass.server.policy.request import PolicyRequest


class Decider(Protocol):
    def decide(self, request: PolicyRequest) -> Decision: ...


class DeciderSource(Protocol):
    def current(self) -> Decider: ...


class _TimedDecider:
    __slots__ = ("_engine", "_observe")

    def __init__(self, engine: Decider, observe: Callable[[float], None]) -> None:
        self._engine = engine
        self._observe = observe

    def decide(self, request: PolicyRequest) -> Decision:
        started = time.perf_counter()
        try:
            return self._engine.decide(request)
        finally:
            self._observe(time.perf_counter() - started)


class TimedPolicy:
    """The policy in force, each decision timed. Follows reloads: a new engine gets a new
    wrapper the first time it is asked for."""

    def __init__(self, source: DeciderSource, observe: Callable[[float], None]) -> None:
        self._source = source
        self._observe = observe
        self._engine: Decider | None = None
        self._timed: Decider | None = None

    def current(self) -> Decider:
        engine = self._source.current()
        if engine is not self._engine or self._timed is None:
            self._engine = engine
            self._timed = _TimedDecider(engine, self._observe)
        return self._timed


class PeerAttestor(Protocol):
    def attest_peer_certificate(self, leaf_pem: bytes, chain_pem: bytes | None) -> Workload: ...

    def attest_bearer(self, authorization: str) -> Workload: ...


class CountingAttestor:
    """An attestor whose failures are reported to `failed(rule)` before they propagate."""

    def __init__(self, attestor: PeerAttestor, failed: Callable[[str], None]) -> None:
        self._attestor = attestor
        self._failed = failed

    def attest_peer_certificate(self, leaf_pem: bytes, chain_pem: bytes | None) -> Workload:
        try:
            return self._attestor.attest_peer_certificate(leaf_pem, chain_pem)
        except AttestationFailed as error:
            self._failed(error.rule)
            raise

    def attest_bearer(self, authorization: str) -> Workload:
        try:
            return self._attestor.attest_bearer(authorization)
        except AttestationFailed as error:
            self._failed(error.rule)
            raise
