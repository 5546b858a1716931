"""Log lines: one JSON object per line with the request id, or readable text."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from taskpass.server.logs import JsonFormatter, RequestIdFilter, TextFormatter, configure_logging
from taskpass.server.request_id import bind_request_id


def record(msg: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord(
        "taskpass.test", logging.INFO, __file__, 1, msg, args or ("you",), None
    )
    made.__dict__.update(extra)
    return made


def test_a_json_line_has_the_fixed_fields_and_the_extras() -> None:
    line = json.loads(
        JsonFormatter().format(
            record(method="/s/M", workload="spiffe://x/y", code="OK", duration_ms=1.5)
        )
    )
    assert line.pop("ts").endswith("+00:00")
    assert line == {
        "level": "info",
        "logger": "taskpass.test",
        "msg": "hello you",
        "method": "/s/M",
        "workload": "spiffe://x/y",
        "code": "OK",
        "duration_ms": 1.5,
    }


def test_a_json_line_carries_the_request_id_of_the_call_it_was_logged_in() -> None:
    def in_call() -> str:
        bind_request_id("req-7")
        return JsonFormatter().format(record())

    assert json.loads(contextvars.copy_context().run(in_call))["request_id"] == "req-7"


def test_the_filter_stamps_the_request_id_when_the_record_is_emitted() -> None:
    def in_call() -> logging.LogRecord:
        bind_request_id("req-8")
        made = record()
        RequestIdFilter().filter(made)
        return made

    made = contextvars.copy_context().run(in_call)
    assert json.loads(JsonFormatter().format(made))["request_id"] == "req-8"  # formatted later


def test_a_json_line_is_one_line_even_with_a_traceback_and_newlines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        made = record("two\n%s", "lines")
        made.exc_info = sys.exc_info()
    text = JsonFormatter().format(made)
    assert "\n" not in text
    parsed = json.loads(text)
    assert parsed["msg"] == "two\nlines"
    assert "ValueError: boom" in parsed["exc"]


def test_text_lines_append_the_fields_as_key_values() -> None:
    text = TextFormatter().format(record(code="OK", duration_ms=2.0))
    assert text.endswith("INFO taskpass.test: hello you code=OK duration_ms=2.0")


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
@pytest.mark.parametrize(
    ("log_format", "looks_like"),
    [pytest.param("json", "{", id="json"), pytest.param("text", "20", id="text")],
)
def test_configure_logging_sends_records_in_the_chosen_format(
    log_format: str, looks_like: str
) -> None:
    stream = io.StringIO()
    configure_logging(log_format, level="info", stream=stream)  # type: ignore[arg-type]
    logging.getLogger("taskpass.test").info("ready")
    logging.getLogger("taskpass.test").debug("not at info")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(looks_like)
    assert "ready" in lines[0]
