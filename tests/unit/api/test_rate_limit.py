"""The rate-limit interceptor costs unlimited methods nothing: they are handed on untouched."""

from __future__ import annotations

from typing import Any, NamedTuple

import grpc

from taskpass.server.api.pipeline import CallPipeline
from taskpass.server.api.rate_limit import RateLimiting
from taskpass.server.limits import RateLimit, RateLimiter
from taskpass.server.metrics import Metrics


class Details(NamedTuple):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


async def behaviour(request: Any, context: Any) -> Any:
    return request


HANDLER = grpc.unary_unary_rpc_method_handler(behaviour)


async def continuation(details: Any) -> Any:
    return HANDLER


def interceptor() -> CallPipeline:
    limiter = RateLimiter(RateLimit(per_second=1, burst=1), what="calls", setting="test")
    return CallPipeline(
        rate_limit=RateLimiting(limiter=limiter, limited_methods={"/s/Limited"}, metrics=Metrics())
    )


async def test_a_method_without_a_limit_is_handed_on_untouched() -> None:
    handed = await interceptor().intercept_service(continuation, Details("/s/Other"))  # type: ignore[arg-type]
    assert handed is HANDLER


async def test_a_limited_method_is_wrapped_once_and_the_wrapper_reused() -> None:
    limiting = interceptor()
    first = await limiting.intercept_service(continuation, Details("/s/Limited"))  # type: ignore[arg-type]
    again = await limiting.intercept_service(continuation, Details("/s/Limited"))  # type: ignore[arg-type]
    assert first is not HANDLER
    assert again is first
