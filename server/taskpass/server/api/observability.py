"""The outermost stage of every call (api/pipeline.py): a request id, metrics, an access line.

For each call it
- takes the caller's `x-request-id` if well-formed (else makes one), makes it current for the
  call (log lines and audit records pick it up, see request_id.py) and returns it in the
  trailing metadata (status.abort_with keeps it when an error adds its own trailers);
- counts the call by method and status code, and for Exchange by outcome with its latency;
- logs `rpc` on `taskpass.access` with method, workload, code and duration_ms for every call
  that did not end OK, and with `access_log = "all"` ([logging]) for every call: a line per
  successful call costs ~10 us of CPU, and the audit log and metrics already count those;
- turns an exception that escaped every handler (a bug) into INTERNAL with a generic message
  naming the request id, never the exception's text, and logs the cause.

Bytes that do not parse as the method's message are answered INVALID_ARGUMENT inside it, before
anything else runs (see parsing.py and pipeline.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc

from taskpass.server.api.authz import current_workload
from taskpass.server.api.status import DETAIL_PREFIX
from taskpass.server.config import AccessLog
from taskpass.server.metrics import ALLOW, Metrics, outcome_of
from taskpass.server.request_id import METADATA_KEY, accept_request_id, bind_request_id

log = logging.getLogger("taskpass.api")
ACCESS_LOGGER = "taskpass.access"
access_log = logging.getLogger(ACCESS_LOGGER)

Context = grpc.aio.ServicerContext[Any, Any]

_PENDING_MARK = DETAIL_PREFIX + "decision-id"  # only ApprovalRequired sends it with this code


def _request_id(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == METADATA_KEY:
            return accept_request_id(value)
    return accept_request_id(None)


def _workload_id() -> str | None:
    try:
        return current_workload().id
    except LookupError:  # public method, or refused before attestation finished
        return None


class _Call:
    """One call's bookkeeping, ended exactly once."""

    __slots__ = ("context", "observer", "request_id", "started")

    def __init__(self, observer: _MethodObserver, context: Context) -> None:
        self.started = time.perf_counter()
        self.observer = observer
        self.context = context
        self.request_id = request_id = _request_id(context)
        bind_request_id(request_id)
        context.set_trailing_metadata(((METADATA_KEY, request_id),))

    def aborted_code(self) -> str:
        code = self.context.code()
        return code.name if code is not None else "UNKNOWN"

    async def internal(self, error: Exception) -> None:
        log.error("unexpected error in %s", self.observer.method, exc_info=error)
        await self.context.abort(
            grpc.StatusCode.INTERNAL,
            f"internal error; the server log has details (request id {self.request_id})",
            trailing_metadata=((METADATA_KEY, self.request_id),),
        )

    def end(self, code: str) -> None:
        self.observer.end(self, code)


class _MethodObserver:
    """Observes one method's calls, with the metric children of its usual outcome bound once."""

    __slots__ = ("_exchange", "_log_ok", "_metrics", "_ok", "_ok_exchange", "method")

    def __init__(self, metrics: Metrics, method: str, *, exchange: bool, log_ok: bool) -> None:
        self.method = method
        self._metrics = metrics
        self._log_ok = log_ok
        self._ok = metrics.rpcs.labels(method, "OK")
        self._exchange = exchange
        self._ok_exchange = (
            (metrics.exchanges.labels(ALLOW, "OK"), metrics.exchange_seconds.labels(ALLOW))
            if exchange
            else None
        )

    def begin(self, context: Context) -> _Call:
        return _Call(self, context)

    def end(self, call: _Call, code: str) -> None:
        seconds = time.perf_counter() - call.started
        if code == "OK":
            self._ok.inc()
            if self._ok_exchange is not None:
                self._ok_exchange[0].inc()
                self._ok_exchange[1].observe(seconds)
            if not self._log_ok:
                return
        else:
            self._metrics.rpc_done(self.method, code)
            if self._exchange:
                pending = code == "FAILED_PRECONDITION" and any(
                    k == _PENDING_MARK for k, _ in call.context.trailing_metadata() or ()
                )
                outcome = outcome_of(code, approval_pending=pending)
                self._metrics.exchange_done(outcome, code, seconds)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                "rpc",
                extra={
                    "request_id": call.request_id,
                    "method": self.method,
                    "workload": _workload_id(),
                    "code": code,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )


class Observability:
    """The observability stage: one observer per method (see the module docstring)."""

    def __init__(
        self, *, metrics: Metrics, exchange_method: str, access_log: AccessLog = "failures"
    ) -> None:
        self._metrics = metrics
        self._exchange = exchange_method
        self._log_ok = access_log == "all"

    def observer(self, method: str) -> _MethodObserver:
        return _MethodObserver(
            self._metrics, method, exchange=method == self._exchange, log_ok=self._log_ok
        )
