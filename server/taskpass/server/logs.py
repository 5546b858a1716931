"""Log output: one JSON object per line (the default outside dev mode), or readable text.

Every line carries `ts`, `level`, `logger`, `msg`, and the `request_id` of the RPC it was logged
in; the access line of each RPC (api/observability.py) adds `method`, `workload`, `code` and
`duration_ms`. Values come from the code, never from raw request metadata, so a caller cannot
forge a log line; tokens and keys are never logged.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import IO, Literal

from taskpass.server.request_id import current_request_id

LogFormat = Literal["json", "text"]
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "text")

EXTRA_FIELDS = ("method", "workload", "code", "duration_ms")
"""Fields a log call may pass with `extra=`; each lands in the line when present."""


def _request_id(record: logging.LogRecord) -> str | None:
    explicit = getattr(record, "request_id", None)
    return explicit if isinstance(explicit, str) else current_request_id()


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request id when it is emitted (in the RPC's own
    context), so a handler that formats later, elsewhere, still has it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = _request_id(record)
        if request_id is not None:
            line["request_id"] = request_id
        for name in EXTRA_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        pairs = [
            f"{name}={record.__dict__[name]}"
            for name in EXTRA_FIELDS
            if record.__dict__.get(name) is not None
        ]
        request_id = _request_id(record)
        if request_id is not None:
            pairs.append(f"request_id={request_id}")
        if not pairs:
            return text
        head, newline, rest = text.partition("\n")  # keep a traceback below the line
        return f"{head} {' '.join(pairs)}{newline}{rest}"


def formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(
    log_format: LogFormat, *, level: str = "info", stream: IO[str] | None = None
) -> None:
    """Send every log record at `level` or above to `stream` (stderr) in `log_format`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
