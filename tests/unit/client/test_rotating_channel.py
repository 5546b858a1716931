from __future__ import annotations

import asyncio
from typing import Any, cast

import grpc

from taskpass.client.rotating_channel import RotatingChannel


class FakeChannel:
    def __init__(self, material: str) -> None:
        self.material = material
        self.closed_with: list[float | None] = []
        self.calls: list[tuple[str, Any]] = []

    def unary_unary(self, method: str, *_: Any) -> Any:
        def call(request: Any, **_: Any) -> str:
            self.calls.append((method, request))
            return f"{self.material}:{request}"

        return call

    async def close(self, grace: float | None) -> None:
        self.closed_with.append(grace)


class Source:
    def __init__(self) -> None:
        self.material = "svid-1"
        self.built: list[FakeChannel] = []

    def build(self, material: str) -> grpc.aio.Channel:
        channel = FakeChannel(material)
        self.built.append(channel)
        return cast("grpc.aio.Channel", channel)


def rotating(source: Source, closed: list[str] | None = None) -> RotatingChannel[str]:
    return RotatingChannel(
        material=lambda: source.material,
        build=source.build,
        on_close=(lambda: closed.append("source")) if closed is not None else None,
        retire_grace=7.0,
    )


async def test_calls_go_to_one_channel_until_the_material_changes() -> None:
    source = Source()
    channel = rotating(source)
    call: Any = channel.unary_unary("/svc/M")
    assert call("a") == "svid-1:a"
    assert call("b") == "svid-1:b"
    assert len(source.built) == 1
    await channel.close()


async def test_an_invalidation_with_unchanged_material_keeps_the_channel() -> None:
    source = Source()
    channel = rotating(source)
    call: Any = channel.unary_unary("/svc/M")
    call("a")
    channel.invalidate()
    assert call("b") == "svid-1:b"
    assert len(source.built) == 1
    assert channel.rebuilds == 0
    await channel.close()


async def test_changed_material_is_read_only_after_an_invalidation() -> None:
    source = Source()
    channel = rotating(source)
    call: Any = channel.unary_unary("/svc/M")
    call("a")
    source.material = "svid-2"
    assert call("b") == "svid-1:b"  # not re-read on every call: that is what invalidate() is for
    channel.invalidate()
    assert call("c") == "svid-2:c"
    assert channel.rebuilds == 1
    await channel.close()


async def test_the_previous_channel_is_closed_with_a_grace_period_for_calls_in_flight() -> None:
    source = Source()
    channel = rotating(source)
    call: Any = channel.unary_unary("/svc/M")
    call("a")
    source.material = "svid-2"
    channel.invalidate()
    call("b")
    await asyncio.sleep(0)  # let the retiring close start
    old, new = source.built
    assert old.closed_with == [7.0]
    assert new.closed_with == []
    await channel.close()
    assert new.closed_with == [None]


async def test_closing_closes_the_channel_and_the_source() -> None:
    source, closed = Source(), list[str]()
    channel = rotating(source, closed)
    channel.unary_unary("/svc/M")("a")
    await channel.close()
    await channel.close()  # idempotent
    assert closed == ["source"]
    assert source.built[0].closed_with == [None]
