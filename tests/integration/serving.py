"""A real `taskpass serve` subprocess on the harness's config, for signals, kill -9 and restarts.

    served = ServedConfig.write(tmp_path, pki)          # fixed ports, so a restart reuses them
    async with ServeProcess(served) as server:          # started; SIGKILLed if still running
        async with served.agent() as client: ...
        server.terminate(); await server.wait()

The process logs JSON lines (`--log-format json`) to a pipe that is drained all the time (every
RPC logs an access line); `lines` holds them, parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import socket
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from taskpass.client import TaskpassClient
from taskpass.server.app import TaskpassServer
from tests.integration.harness import (
    ADMIN,
    BILLING_BOT,
    Harness,
    harness_config,
    harness_config_text,
)
from tests.support.pki import EXAMPLE, TestPki

START_TIMEOUT = 20.0
SERVING = "taskpass serving"
# Reconnect fast after a restart (grpc's default backoff starts at 1 s and grows).
FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
]


async def start_tuned_harness(directory: Path, pki: TestPki, **changes: Any) -> Harness:
    """The in-process harness with ServerConfig fields replaced (limits=..., health=...)."""
    legacy_ca = pki.ca("legacy batch CA")
    config = dataclasses.replace(harness_config(directory, pki, legacy_ca), **changes)
    return Harness(
        server=await TaskpassServer.start(config),
        pki=pki,
        directory=directory,
        server_ca=directory / "bundles" / f"{EXAMPLE}.pem",
        legacy_ca=legacy_ca,
        policy_key=directory / "policy-signer" / "policy-signer.key",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class ServedConfig:
    directory: Path
    pki: TestPki
    file: Path
    mtls_port: int
    tls_port: int
    http_port: int

    @classmethod
    def write(cls, directory: Path, pki: TestPki, *, extra: str = "") -> ServedConfig:
        """The harness config with fixed ports, plus `extra` TOML, written to taskpass.toml."""
        ports = {"mtls": free_port(), "tls": free_port(), "http": free_port()}
        text = harness_config_text(directory, pki, pki.ca("legacy batch CA"))
        for name, port in ports.items():
            listen = f'{name}_address = "127.0.0.1:0"'
            assert listen in text
            text = text.replace(listen, f'{name}_address = "127.0.0.1:{port}"')
        file = directory / "taskpass.toml"
        file.write_text(text + extra)
        return cls(directory, pki, file, ports["mtls"], ports["tls"], ports["http"])

    @property
    def database(self) -> Path:
        return self.directory / "data" / "taskpass.db"

    @property
    def server_ca(self) -> Path:
        return self.directory / "bundles" / f"{EXAMPLE}.pem"

    @property
    def mtls_target(self) -> str:
        return f"localhost:{self.mtls_port}"

    def metrics(self) -> dict[str, float]:
        return scrape_metrics(self.http_port)

    async def wait_for_metric(self, name: str, at_least: float, timeout: float = 10.0) -> None:
        """Poll /metrics until `name` reaches `at_least` (it counts what the server did)."""
        async with asyncio.timeout(timeout):
            while (await asyncio.to_thread(self.metrics)).get(name, 0.0) < at_least:
                await asyncio.sleep(0.02)

    def identity(self, spiffe_id: str) -> tuple[Path, Path]:
        """Certificate and key files for `spiffe_id` (an X.509-SVID of the test PKI)."""
        name = spiffe_id.rsplit("/", 1)[-1]
        return TestPki.write_identity(self.directory / "clients", name, self.pki.leaf(spiffe_id))

    def channel(self, spiffe_id: str) -> grpc.aio.Channel:
        cert, key = self.identity(spiffe_id)
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.server_ca.read_bytes(),
            private_key=key.read_bytes(),
            certificate_chain=cert.read_bytes(),
        )
        return grpc.aio.secure_channel(self.mtls_target, creds, options=FAST_RECONNECT)

    def agent(self, spiffe_id: str = BILLING_BOT) -> TaskpassClient:
        return TaskpassClient(self.channel(spiffe_id), timeout=10.0)

    def cli_args(self, spiffe_id: str = ADMIN) -> list[str]:
        """The connection flags of the `taskpass` client commands, as `spiffe_id`."""
        cert, key = self.identity(spiffe_id)
        return [
            "--server",
            self.mtls_target,
            "--ca",
            str(self.server_ca),
            "--cert",
            str(cert),
            "--key",
            str(key),
        ]


def scrape_metrics(http_port: int | None) -> dict[str, float]:
    """GET /metrics, as {'name{label="value",...}': value} (labels sorted). Blocking."""
    assert http_port is not None
    url = f"http://127.0.0.1:{http_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse_metrics(response.read().decode())


async def metrics_once(
    http_port: int | None, expected: dict[str, float], timeout: float = 5.0
) -> dict[str, float]:
    """Scrape until every `expected` sample has its value, then return the scrape.

    An aborted call's status reaches its client before the server has counted it (grpcio
    sends the status from inside abort), so a test reads the counts once they have landed."""
    async with asyncio.timeout(timeout):
        while True:
            scraped = await asyncio.to_thread(scrape_metrics, http_port)
            if all(scraped.get(name) == value for name, value in expected.items()):
                return scraped
            await asyncio.sleep(0.01)


def parse_metrics(text: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


class ServeProcess:
    def __init__(self, config: ServedConfig) -> None:
        self._config = config
        self._process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self._serving = asyncio.Event()
        self.lines: list[dict[str, Any]] = []

    async def start(self) -> None:
        """Start the server and return once it logs that it is serving."""
        self._serving.clear()
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "taskpass.server.cli.main",
            "serve",
            "--config",
            str(self._config.file),
            "--log-format",
            "json",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._drain = asyncio.create_task(self._read(self._process))
        waiting = asyncio.create_task(self._serving.wait())
        done, _ = await asyncio.wait(
            {waiting, self._drain}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if waiting not in done:
            waiting.cancel()
            self.kill()
            raise AssertionError(f"taskpass serve did not start; its log: {self.lines[-20:]}")

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"msg": raw.decode(errors="replace").rstrip(), "level": "raw"}
            self.lines.append(line)
            if str(line.get("msg", "")).startswith(SERVING):
                self._serving.set()

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM: a graceful shutdown."""
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 20.0) -> int:
        """The exit code, once the process has ended and its log is read to the end."""
        assert self._process is not None
        code = await asyncio.wait_for(self._process.wait(), timeout)
        if self._drain is not None:
            await asyncio.wait_for(self._drain, timeout)
        return code

    async def __aenter__(self) -> ServeProcess:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
        if self._process is not None:
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await self.wait()
