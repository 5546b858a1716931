"""Requests whose bytes do not parse as the method's message.

grpcio answers a deserializer that raises with UNKNOWN and the parser's exception text. The
observability interceptor installs `tolerant(...)` in its place: what does not parse becomes an
`Unparsed` value, which the interceptor answers INVALID_ARGUMENT naming the expected message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from taskpass.server.errors import InvalidRequest


class Unparsed:
    """What the deserializer hands on instead of raising."""

    __slots__ = ("error",)

    def __init__(self, error: InvalidRequest) -> None:
        self.error = error


def _message_name(deserializer: Callable[[bytes], Any]) -> str:
    owner = getattr(deserializer, "__self__", None)  # Message.FromString is a classmethod
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request message"))


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserializer`, returning Unparsed where it would raise."""
    if deserializer is None:
        return None
    message = (
        f"the request bytes are not a valid {_message_name(deserializer)}; send the message "
        "the generated client stub builds"
    )

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # protobuf's DecodeError, or anything its parser trips on
            # A new error each time: one shared instance would collect every raise's traceback
            # (and with it each failed call's frames) for the life of the process.
            return Unparsed(InvalidRequest("message", message))

    return deserialize
