"""JWKS and metadata over HTTP, the gRPC health service, reflection, and bundle reload."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from taskpass.client import AttestationFailed, Task
from tests.integration.harness import ISSUER, Harness
from tests.support.pki import OTHER, TestPki, replace_file


def _get(port: int, path: str) -> tuple[int, dict[str, Any], str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, json.loads(response.read()), response.headers["Content-Type"]


async def test_jwks_over_http_matches_grpc_and_has_no_private_members(harness: Harness) -> None:
    assert harness.server.ports.http is not None
    status, jwks, content_type = await asyncio.to_thread(
        _get, harness.server.ports.http, "/.well-known/jwks.json"
    )
    assert status == 200
    assert content_type.startswith("application/jwk-set+json")
    async with harness.agent() as client:
        assert jwks == await client.jwks()
    for key in jwks["keys"]:
        assert not {"d", "p", "q", "k"} & set(key)
        assert key["use"] == "sig"


async def test_oauth_metadata_points_at_the_jwks(harness: Harness) -> None:
    assert harness.server.ports.http is not None
    status, metadata, _ = await asyncio.to_thread(
        _get, harness.server.ports.http, "/.well-known/oauth-authorization-server"
    )
    assert status == 200
    assert metadata["issuer"] == ISSUER
    assert metadata["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert metadata["tls_client_certificate_bound_access_tokens"] is True


async def test_healthz(harness: Harness) -> None:
    assert harness.server.ports.http is not None
    status, body, _ = await asyncio.to_thread(_get, harness.server.ports.http, "/healthz")
    assert (status, body) == (200, {"status": "ok"})


async def test_grpc_health_and_reflection_need_no_workload_identity(harness: Harness) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=harness.server_ca.read_bytes())
    async with grpc.aio.secure_channel(harness.tls_target, creds) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = await health.Check(
            health_pb2.HealthCheckRequest(service="taskpass.v1.CredentialService"), timeout=5
        )
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for answer in reflection.ServerReflectionInfo(iter([request]), timeout=5):
            names = {s.name for s in answer.list_services_response.service}
            break
    assert "taskpass.v1.CredentialService" in names


async def test_trust_bundle_reload_takes_effect_without_restart(harness: Harness) -> None:
    """Replace other.org's bundle with a new CA: SVIDs of the old CA stop working, live."""
    other_leaf = harness.pki.leaf(f"spiffe://{OTHER}/agents/billing-bot")
    task = Task(task_id="t-r", audience="payments-api", action="read")
    async with harness.client(other_leaf, name="other") as client:
        # other.org is trusted but the policy grants only example.org agents: a policy denial
        # proves attestation passed.
        from taskpass.client import Denied

        with pytest.raises(Denied):
            await client.exchange(task)
        new_ca = TestPki().ca("replacement other.org CA", trust_domain=OTHER)
        replace_file(harness.directory / "bundles" / f"{OTHER}.pem", new_ca.pem)
        for _ in range(50):  # reload interval is 0.2 s in the harness
            await asyncio.sleep(0.1)
            try:
                await client.exchange(task)
            except AttestationFailed as error:
                assert error.rule == "X-9"
                break
            except Denied:
                continue
        else:
            pytest.fail("the replaced bundle never took effect")
