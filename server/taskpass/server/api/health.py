"""The gRPC health service kept in step with readiness (store ping, signing key).

Every service reports SERVING while the server is ready and NOT_SERVING while it is not, so a
load balancer or Kubernetes gRPC probe stops sending exchanges to a replica that cannot store
them. On shutdown every service turns NOT_SERVING for good before the listeners stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from taskpass.server.metrics import Metrics
from taskpass.server.readiness import Readiness, ReadinessProbe

log = logging.getLogger("taskpass.health")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthReporter:
    def __init__(
        self,
        *,
        probe: ReadinessProbe,
        servicer: HealthServicer,
        services: Sequence[str],
        metrics: Metrics,
    ) -> None:
        self._probe = probe
        self._servicer = servicer
        self._services = ("", *services)
        self._metrics = metrics
        self._last: Readiness | None = None
        self._stopping = False

    @property
    def last(self) -> Readiness | None:
        return self._last

    async def refresh(self) -> Readiness:
        """Check readiness now and publish it; transitions are logged."""
        readiness = await self._probe.check()
        if self._stopping:
            return readiness
        if self._last is None or readiness.ok != self._last.ok:
            status = SERVING if readiness.ok else NOT_SERVING
            for service in self._services:
                await self._servicer.set(service, status)
            if readiness.ok:
                log.info("ready: store and signing key ok")
            else:
                log.error("not ready: %s", readiness.describe())
        self._metrics.ready.set(1 if readiness.ok else 0)
        self._last = readiness
        return readiness

    async def ready(self) -> bool:
        """For /healthz: a live check, published as well; False once the server is stopping."""
        readiness = await self.refresh()
        return readiness.ok and not self._stopping

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:  # a broken check must not end the loop; it says why
                log.exception("readiness check failed")

    async def close(self) -> None:
        await self._probe.close()

    async def shutting_down(self) -> None:
        """Every service NOT_SERVING from now on, whatever later checks find."""
        self._stopping = True
        self._metrics.ready.set(0)
        await self._servicer.enter_graceful_shutdown()
