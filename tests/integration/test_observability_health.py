"""The gRPC health service, /healthz and `taskpass_ready` follow the store: NOT_SERVING / 503
while the database is gone, SERVING / 200 again once it is back."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskpass.server.config import HealthConfig, StoreConfig
from tests.integration.harness import Harness
from tests.integration.serving import scrape_metrics, start_tuned_harness
from tests.support.pki import TestPki
from tests.support.postgres import admin_connection, fresh_schema

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
FAST_CHECKS = HealthConfig(check_interval=dt.timedelta(milliseconds=100))

HealthStream = grpc.aio.UnaryStreamCall[
    health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
]


def get(harness: Harness, path: str) -> tuple[int, bytes]:
    assert harness.server.ports.http is not None
    url = f"http://127.0.0.1:{harness.server.ports.http}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def healthz(harness: Harness) -> tuple[int, object]:
    status, body = await asyncio.to_thread(get, harness, "/healthz")
    return status, json.loads(body)


async def ready_gauge(harness: Harness) -> float:
    return (await asyncio.to_thread(scrape_metrics, harness.server.ports.http))["taskpass_ready"]


@contextlib.asynccontextmanager
async def health_watch(harness: Harness) -> AsyncIterator[HealthStream]:
    creds = grpc.ssl_channel_credentials(root_certificates=harness.server_ca.read_bytes())
    async with grpc.aio.secure_channel(harness.tls_target, creds) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        stream = stub.Watch(health_pb2.HealthCheckRequest(service="taskpass.v1.CredentialService"))
        yield stream
        stream.cancel()


async def next_status(stream: HealthStream) -> int:
    response = await asyncio.wait_for(stream.read(), timeout=10)
    assert isinstance(response, health_pb2.HealthCheckResponse)
    return int(response.status)


async def check_health_follows_the_store(
    harness: Harness,
    take_away: Callable[[], Awaitable[None]],
    bring_back: Callable[[], Awaitable[None]],
) -> None:
    async with health_watch(harness) as stream:
        assert await next_status(stream) == SERVING
        await take_away()

        assert await next_status(stream) == NOT_SERVING
        assert await healthz(harness) == (503, {"status": "unavailable"})
        assert await ready_gauge(harness) == 0

        await bring_back()
        assert await next_status(stream) == SERVING
        assert await healthz(harness) == (200, {"status": "ok"})
        assert await ready_gauge(harness) == 1


async def test_health_follows_a_sqlite_database_file_that_goes_away(
    tmp_path: Path, pki: TestPki
) -> None:
    harness = await start_tuned_harness(tmp_path, pki, health=FAST_CHECKS)
    database = tmp_path / "data" / "taskpass.db"
    moved = tmp_path / "elsewhere.db"

    async def take_away() -> None:
        database.rename(moved)  # the server's open connections keep working; a restart would not

    async def bring_back() -> None:
        moved.rename(database)

    try:
        await check_health_follows_the_store(harness, take_away, bring_back)
    finally:
        await harness.server.stop(grace=0.5)


@pytest.mark.postgres
async def test_health_follows_a_postgresql_schema_that_goes_away(
    tmp_path: Path, pki: TestPki
) -> None:
    async with fresh_schema() as dsn:
        schema = dsn.rsplit("search_path=", 1)[1]
        harness = await start_tuned_harness(
            tmp_path,
            pki,
            health=FAST_CHECKS,
            store=StoreConfig(dsn=dsn),
        )
        admin = await admin_connection()

        async def take_away() -> None:
            await admin.execute(f'ALTER SCHEMA "{schema}" RENAME TO "{schema}_gone"')

        async def bring_back() -> None:
            await admin.execute(f'ALTER SCHEMA "{schema}_gone" RENAME TO "{schema}"')

        try:
            await check_health_follows_the_store(harness, take_away, bring_back)
        finally:
            with contextlib.suppress(Exception):
                await bring_back()
            await admin.close()
            await harness.server.stop(grace=0.5)
