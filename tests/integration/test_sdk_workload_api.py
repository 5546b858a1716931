"""The SDK's Workload API path: a Workload API server speaking the real SPIFFE proto on a Unix
socket, the `spiffe` package's X509Source, and SVID rotation picked up without a restart."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import jwt as pyjwt
import pytest
from spiffe import X509Source

from taskpass.client import InvalidRequest, Task, Unavailable
from taskpass.client.sync import SyncTaskpassClient
from taskpass.client.verifier import certificate_thumbprint
from taskpass.client.workload_api import from_workload_api, from_x509_source
from tests.integration.harness import BILLING_BOT, REPORT_BOT, Harness
from tests.support.workload_api import WorkloadApiServer

READ = Task(task_id="t-wl", audience="payments-api", action="read")


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # pytest's tmp_path can exceed the ~100-byte limit of a Unix socket path
    with tempfile.TemporaryDirectory(prefix="tp-", dir="/tmp") as directory:
        yield Path(directory)


@pytest.fixture
async def agent(harness: Harness, socket_dir: Path) -> AsyncIterator[WorkloadApiServer]:
    server = await WorkloadApiServer.start(
        socket_dir, svid=harness.pki.leaf(BILLING_BOT), bundle=[harness.pki.example.root]
    )
    try:
        yield server
    finally:
        await server.stop()


def claims(token: str) -> dict[str, object]:
    value: dict[str, object] = pyjwt.decode(token, options={"verify_signature": False})
    return value


async def open_source(agent: WorkloadApiServer) -> X509Source:
    return await asyncio.to_thread(X509Source, socket_path=agent.socket, timeout_in_seconds=5)


async def test_a_client_from_the_workload_api_exchanges_with_the_agents_svid(
    harness: Harness, agent: WorkloadApiServer
) -> None:
    async with await from_workload_api(harness.mtls_target, socket_path=agent.socket) as client:
        credential = await client.exchange(READ)
    assert claims(credential.token)["sub"] == BILLING_BOT


async def test_a_rotated_svid_is_used_by_the_next_call_without_a_restart(
    harness: Harness, agent: WorkloadApiServer
) -> None:
    source = await open_source(agent)
    rotated = threading.Event()
    try:
        async with from_x509_source(harness.mtls_target, source) as client:
            first = await client.exchange(READ)
            # subscribed after the client, so called after it: the client has seen the update
            source.subscribe_for_updates(rotated.set)
            new_svid = harness.pki.leaf(REPORT_BOT)
            agent.rotate(new_svid)
            assert await asyncio.to_thread(rotated.wait, 5)
            second = await client.exchange(
                Task(task_id="t-wl2", audience="payments-api", action="read")
            )
    finally:
        source.close()
    assert claims(first.token)["sub"] == BILLING_BOT
    assert claims(second.token)["sub"] == REPORT_BOT
    assert claims(second.token)["cnf"] == {"x5t#S256": certificate_thumbprint(new_svid.der)}


async def test_a_rotation_to_a_new_certificate_of_the_same_id_rebinds_the_credentials(
    harness: Harness, agent: WorkloadApiServer
) -> None:
    source = await open_source(agent)
    rotated = threading.Event()
    try:
        async with (
            from_x509_source(harness.mtls_target, source) as client,
            client.task("t-rot", audience="payments-api", action="read") as task,
        ):
            before = claims(task.token)["cnf"]
            source.subscribe_for_updates(rotated.set)
            renewed = harness.pki.leaf(BILLING_BOT)
            agent.rotate(renewed)
            assert await asyncio.to_thread(rotated.wait, 5)
            after = await client.exchange(
                Task(task_id="t-rot", audience="payments-api", action="read")
            )
    finally:
        source.close()
    assert claims(after.token)["cnf"] == {"x5t#S256": certificate_thumbprint(renewed.der)}
    assert claims(after.token)["cnf"] != before


async def test_closing_the_client_closes_the_source_it_opened(
    harness: Harness, agent: WorkloadApiServer
) -> None:
    client = await from_workload_api(harness.mtls_target, socket_path=agent.socket)
    await client.exchange(READ)
    assert agent.streams == 1
    await client.aclose()
    await asyncio.wait_for(agent.wait_idle(), 5)  # the source cancelled its stream


async def test_a_server_trust_domain_the_agent_sent_no_bundle_for_is_a_clear_error(
    harness: Harness, agent: WorkloadApiServer
) -> None:
    source = await open_source(agent)
    try:
        with pytest.raises(InvalidRequest, match=r"no X\.509 bundle for trust domain other\.org"):
            from_x509_source(harness.mtls_target, source, server_trust_domain="other.org")
    finally:
        source.close()


async def test_a_missing_workload_api_socket_says_how_to_point_at_one(socket_dir: Path) -> None:
    with pytest.raises(InvalidRequest, match="SPIFFE_ENDPOINT_SOCKET"):
        await from_workload_api("localhost:1", socket_path=f"unix://{socket_dir}/absent.sock")


async def test_an_agent_that_never_answers_is_unavailable(socket_dir: Path) -> None:
    (socket_dir / "dead.sock").touch()  # a path that exists but where nothing listens
    with pytest.raises(Unavailable, match="is the SPIRE agent running"):
        await from_workload_api(
            "localhost:1", socket_path=f"unix://{socket_dir}/dead.sock", startup_timeout=0.2
        )


async def test_the_blocking_client_takes_the_same_workload_api_arguments(
    harness: Harness, agent: WorkloadApiServer
) -> None:
    def blocking_agent() -> str:
        with SyncTaskpassClient.from_workload_api(
            harness.mtls_target, socket_path=agent.socket
        ) as client:
            return client.exchange(READ).token

    assert claims(await asyncio.to_thread(blocking_agent))["sub"] == BILLING_BOT
