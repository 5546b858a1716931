"""The examples in README.md and docs/ run as written.

They run against the dev setup `make run` gives: the embedded dev config (dev.toml), the dev PKI
from `taskpass certs init` in certs/dev, the dev policy, with only the ports moved to free ones
(`localhost:8443` and friends in an example are rewritten to the ports of the server under test).

Fenced blocks: ```python runs (sync code on a worker thread, top-level `await` on the loop);
```python to-be-confirmed is compiled only (an API not settled yet); ```yaml and ```toml must
parse; other languages (sh) are not run.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import socket
import tempfile
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from taskpass.client import Task, TaskpassClient
from taskpass.client.jwks import JWKS_PATH
from taskpass.client.verifier import CredentialVerifier, InvalidToken, Reason
from taskpass.server.app import TaskpassServer
from taskpass.server.config import parse_config
from taskpass.server.pki.builder import Issued
from taskpass.server.pki.devpki import init_dev_pki
from tests.support.workload_api import WorkloadApiServer

REPO = Path(__file__).parents[2]
DOCS = sorted((REPO / "docs").glob("*.md"))
DEV_POLICY = "server/taskpass/server/policy/dev_policy.yaml"
DEV_PORTS = ("8443", "8444", "8080")
BILLING_BOT = "spiffe://example.org/agents/billing-bot"
_FENCE = re.compile(r"^```(\S*)(.*)$")


@dataclass(frozen=True)
class Block:
    language: str
    tags: frozenset[str]
    code: str
    line: int


def code_blocks(path: Path, language: str | None = None) -> list[Block]:
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match and match.group(1):
            start = index
            index += 1
            body: list[str] = []
            while not lines[index].startswith("```"):
                body.append(lines[index])
                index += 1
            block = Block(match.group(1), frozenset(match.group(2).split()), "\n".join(body), start)
            if language is None or block.language == language:
                blocks.append(block)
        index += 1
    return blocks


def dev_toml() -> str:
    return resources.files("taskpass.server").joinpath("dev.toml").read_text()


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class DevServer:
    server: TaskpassServer
    directory: Path
    ports: dict[str, int]

    def rebind(self, text: str) -> str:
        for dev_port, port in self.ports.items():
            text = text.replace(f"localhost:{dev_port}", f"localhost:{port}")
        return text

    @property
    def issuer(self) -> str:
        return self.rebind("http://localhost:8080")

    def identity(self, name: str) -> Issued:
        base = self.directory / "certs" / "dev" / name
        cert = x509.load_pem_x509_certificate(base.with_suffix(".pem").read_bytes())
        key = load_pem_private_key(base.with_suffix(".key").read_bytes(), password=None)
        return Issued(cert=cert, key=key)  # type: ignore[arg-type]

    def client(self, name: str = "agents/billing-bot") -> TaskpassClient:
        dev = self.directory / "certs" / "dev"
        return TaskpassClient.from_files(
            f"localhost:{self.ports['8443']}",
            ca=dev / "bundle.pem",
            cert=dev / f"{name}.pem",
            key=dev / f"{name}.key",
        )


@pytest.fixture
async def dev_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DevServer]:
    init_dev_pki(tmp_path / "certs" / "dev", trust_domain="example.org")
    ports = dict(zip(DEV_PORTS, free_ports(len(DEV_PORTS)), strict=True))
    text = dev_toml().replace(DEV_POLICY, str(REPO / DEV_POLICY))
    for dev_port, port in ports.items():
        text = text.replace(f":{dev_port}", f":{port}")
    server = await TaskpassServer.start(parse_config(text, base_dir=tmp_path))
    monkeypatch.chdir(tmp_path)  # the examples name certs/dev/... relative to the repository
    try:
        yield DevServer(server, tmp_path, ports)
    finally:
        await server.stop(grace=0.5)


async def run_python(code: str, namespace: dict[str, Any], name: str) -> None:
    compiled = compile(code, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if compiled.co_flags & inspect.CO_COROUTINE:
        await eval(compiled, namespace)  # noqa: S307 - our own documentation's examples
    else:
        # blocking examples on a worker thread: the server under test runs on this loop
        await asyncio.to_thread(exec, compiled, namespace)


async def bound_token(dev: DevServer, task_id: str) -> str:
    async with dev.client() as client:
        issued = await client.exchange(
            Task(task_id=task_id, audience="payments-api", action="read")
        )
    return issued.token


# --- every page ------------------------------------------------------------------------------


@pytest.mark.parametrize("page", [REPO / "README.md", *DOCS], ids=lambda p: p.name)
def test_every_python_block_compiles_and_every_yaml_or_toml_block_parses(page: Path) -> None:
    for block in code_blocks(page):
        where = f"{page.name}:{block.line + 1}"
        if block.language == "python":
            compile(block.code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        elif block.language == "yaml":
            assert yaml.safe_load(block.code) is not None, where
        elif block.language == "toml":
            tomllib.loads(block.code)


# --- README -----------------------------------------------------------------------------------


async def test_the_readme_agent_and_relying_party_run_as_written(
    dev_server: DevServer, capsys: pytest.CaptureFixture[str]
) -> None:
    agent, relying_party, both_async = code_blocks(REPO / "README.md", "python")
    for five_liner in (agent, relying_party):
        assert len([line for line in five_liner.code.splitlines() if line.strip()]) <= 5

    namespace: dict[str, Any] = {}
    await run_python(dev_server.rebind(agent.code), namespace, "README agent")
    out = capsys.readouterr().out
    assert out.startswith("Authorization: Bearer ey")
    assert namespace["task"].revoked_jtis == (namespace["task"].current.jti,)

    peer_cert = dev_server.identity("agents/billing-bot").pem
    inputs = {"token": await bound_token(dev_server, "t-readme"), "peer_cert": peer_cert}
    namespace = dict(inputs)
    await run_python(dev_server.rebind(relying_party.code), namespace, "README relying party")
    assert namespace["credential"].subject == BILLING_BOT
    assert capsys.readouterr().out.startswith(f"{BILLING_BOT} ('payments:read',")
    namespace["verifier"].close()

    namespace = dict(inputs)
    await run_python(dev_server.rebind(both_async.code), namespace, "README async")
    assert namespace["verified"].subject == BILLING_BOT
    assert namespace["credential"].jti in namespace["task"].revoked_jtis


# --- docs/envoy.md ----------------------------------------------------------------------------


def _find(tree: Any, key: str) -> Iterator[Any]:
    if isinstance(tree, dict):
        for name, value in tree.items():
            if name == key:
                yield value
            yield from _find(value, key)
    elif isinstance(tree, list):
        for item in tree:
            yield from _find(item, key)


def test_the_envoy_config_names_the_dev_issuer_and_its_jwks_url() -> None:
    (config,) = (yaml.safe_load(b.code) for b in code_blocks(REPO / "docs/envoy.md", "yaml"))
    dev = tomllib.loads(dev_toml())
    issuer = dev["issuer"]["issuer"]
    jwks_port = int(dev["listen"]["http_address"].rsplit(":", 1)[1])
    (providers,) = _find(config, "providers")
    provider = providers["taskpass"]
    assert provider["issuer"] == issuer
    assert provider["remote_jwks"]["http_uri"]["uri"] == issuer + JWKS_PATH
    assert provider["audiences"] == ["payments-api"]
    assert provider["require_expiration"] is True  # SETs have no exp: see the page
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    jwks_cluster = clusters[provider["remote_jwks"]["http_uri"]["cluster"]]
    (address,) = _find(jwks_cluster, "socket_address")
    assert address["port_value"] == jwks_port
    (manager,) = (
        network_filter["typed_config"]
        for chain_filters in _find(config, "filters")
        for network_filter in chain_filters
        if network_filter["name"] == "envoy.filters.network.http_connection_manager"
    )
    assert manager["forward_client_cert_details"] == "SANITIZE_SET"
    assert manager["set_current_client_cert_details"]["cert"] is True


async def test_the_envoy_page_checks_the_binding_with_the_forwarded_certificate(
    dev_server: DevServer,
) -> None:
    (block,) = code_blocks(REPO / "docs/envoy.md", "python")
    namespace: dict[str, Any] = {}
    await run_python(dev_server.rebind(block.code), namespace, "envoy.md")
    token = await bound_token(dev_server, "t-envoy")

    def headers(identity: str) -> dict[str, str]:
        pem = dev_server.identity(identity).pem.decode()
        xfcc = f'By=spiffe://example.org/payments;Hash={"0" * 64};Cert="{quote(pem)}"'
        return {"authorization": f"Bearer {token}", "x-forwarded-client-cert": xfcc}

    credential = await namespace["authorize"](headers("agents/billing-bot"))
    assert credential.subject == BILLING_BOT
    with pytest.raises(InvalidToken) as info:
        await namespace["authorize"](headers("agents/report-bot"))
    assert info.value.reason is Reason.CERTIFICATE_MISMATCH


# --- docs/sidecar.md --------------------------------------------------------------------------


async def test_the_sidecar_check_answers_200_or_401_with_the_reason(
    dev_server: DevServer,
) -> None:
    blocks = code_blocks(REPO / "docs/sidecar.md", "python")
    assert [b.tags for b in blocks] == [frozenset(), frozenset()]
    namespace: dict[str, Any] = {}
    await run_python(dev_server.rebind(blocks[1].code), namespace, "sidecar.md")
    token = await bound_token(dev_server, "t-sidecar")
    async with dev_server.client("sidecars/payments-sidecar") as client:
        verifier = CredentialVerifier.from_client(
            client, issuer=dev_server.issuer, audience="payments-api"
        )
        caller = dev_server.identity("agents/billing-bot").der
        thief = dev_server.identity("agents/report-bot").der
        ok = await namespace["check"](verifier, token, caller)
        refused = await namespace["check"](verifier, token, thief)
    assert ok == (200, {"workload": BILLING_BOT, "task": "t-sidecar", "scopes": ["payments:read"]})
    assert refused == (401, {"error": "invalid_token", "reason": "certificate_mismatch"})


# --- docs/spire.md ----------------------------------------------------------------------------


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tp-", dir="/tmp") as directory:
        yield Path(directory)


async def test_the_spire_example_runs_on_a_workload_api_socket(
    dev_server: DevServer,
    socket_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (block,) = code_blocks(REPO / "docs/spire.md", "python")
    ca = x509.load_pem_x509_certificate((dev_server.directory / "certs/dev/ca.pem").read_bytes())
    agent = await WorkloadApiServer.start(
        socket_dir,
        svid=dev_server.identity("agents/billing-bot"),
        bundle=[Issued(cert=ca, key=None)],  # type: ignore[arg-type]
    )
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", agent.socket)
    try:
        await run_python(dev_server.rebind(block.code), {}, "spire.md")
    finally:
        await agent.stop()
    assert capsys.readouterr().out.startswith("credential until 20")


def test_the_spire_pod_mounts_the_agent_socket_where_the_sdk_looks() -> None:
    (pod,) = (yaml.safe_load(b.code) for b in code_blocks(REPO / "docs/spire.md", "yaml"))
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    (mount,) = container["volumeMounts"]
    assert env["SPIFFE_ENDPOINT_SOCKET"] == f"unix://{mount['mountPath']}/agent.sock"
    (volume,) = pod["spec"]["volumes"]
    assert volume["csi"]["driver"] == "csi.spiffe.io"


async def test_the_sidecar_follows_the_stream_and_refuses_a_completed_task(
    dev_server: DevServer,
) -> None:
    blocks = code_blocks(REPO / "docs/sidecar.md", "python")
    namespace: dict[str, Any] = {}
    await run_python(dev_server.rebind(blocks[0].code), namespace, "sidecar.md")
    await run_python(dev_server.rebind(blocks[1].code), namespace, "sidecar.md")
    caller = dev_server.identity("agents/billing-bot").der
    answers: list[tuple[int, dict[str, Any]]] = []

    async def handle_requests(verifier: CredentialVerifier) -> None:
        async with dev_server.client() as agent:
            issued = await agent.exchange(
                Task(task_id="t-side-2", audience="payments-api", action="read")
            )
            answers.append(await namespace["check"](verifier, issued.token, caller))
            await agent.complete_task("t-side-2")
        while True:  # the completion reaches the sidecar within milliseconds; bounded below
            answer = await namespace["check"](verifier, issued.token, caller)
            if answer[0] == 401:
                answers.append(answer)
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(namespace["serve"](handle_requests), timeout=10)
    assert answers[0][0] == 200
    assert answers[1] == (401, {"error": "invalid_token", "reason": "revoked"})
