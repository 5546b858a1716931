"""The health reporter: every service follows readiness; transitions are logged once; after
shutting_down nothing turns it back to SERVING."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import pytest
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from taskpass.server.api.health import NOT_SERVING, SERVING, HealthReporter
from taskpass.server.metrics import Metrics
from taskpass.server.readiness import Readiness, ReadinessProbe

SERVICES = ("taskpass.v1.CredentialService", "taskpass.v1.RevocationService")
DOWN = Readiness(store="store: store unavailable", keys=None)
UP = Readiness(store=None, keys=None)


class Probe:
    def __init__(self) -> None:
        self.next = UP

    async def check(self) -> Readiness:
        return self.next


class Context:
    async def abort(self, *args: object) -> None:
        raise AssertionError(args)


async def status(servicer: HealthServicer, service: str) -> int:
    response = await servicer.Check(health_pb2.HealthCheckRequest(service=service), Context())
    return int(response.status)


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def servicer() -> HealthServicer:
    return HealthServicer()


@pytest.fixture
def reporter(probe: Probe, servicer: HealthServicer) -> HealthReporter:
    return HealthReporter(
        probe=cast(ReadinessProbe, probe), servicer=servicer, services=SERVICES, metrics=Metrics()
    )


async def test_every_service_follows_readiness_both_ways(
    reporter: HealthReporter, probe: Probe, servicer: HealthServicer
) -> None:
    await reporter.refresh()
    assert {await status(servicer, s) for s in ("", *SERVICES)} == {SERVING}
    probe.next = DOWN
    assert not await reporter.ready()
    assert {await status(servicer, s) for s in ("", *SERVICES)} == {NOT_SERVING}
    probe.next = UP
    assert await reporter.ready()
    assert await status(servicer, SERVICES[0]) == SERVING


async def test_a_transition_is_logged_once_with_the_reason(
    reporter: HealthReporter, probe: Probe, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskpass.health")
    probe.next = DOWN
    for _ in range(3):
        await reporter.refresh()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["not ready: store: store unavailable"]


async def test_after_shutting_down_it_stays_not_serving(
    reporter: HealthReporter, servicer: HealthServicer
) -> None:
    await reporter.refresh()
    await reporter.shutting_down()
    await reporter.refresh()
    assert await status(servicer, SERVICES[0]) == NOT_SERVING
    assert not await reporter.ready()


async def test_a_check_that_raises_does_not_end_the_loop(
    servicer: HealthServicer, caplog: pytest.LogCaptureFixture
) -> None:
    checked = asyncio.Event()

    class Flaky:
        calls = 0

        async def check(self) -> Readiness:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("probe bug")
            checked.set()
            return UP

        async def close(self) -> None:
            pass

    reporter = HealthReporter(
        probe=cast(ReadinessProbe, Flaky()), servicer=servicer, services=SERVICES, metrics=Metrics()
    )
    loop = asyncio.create_task(reporter.run(0.001))
    try:
        await asyncio.wait_for(checked.wait(), timeout=5)
    finally:
        loop.cancel()
    assert await status(servicer, SERVICES[0]) == SERVING
    assert "readiness check failed" in caplog.text
