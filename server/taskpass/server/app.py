"""The composition root: builds every component from a ServerConfig and runs the listeners.

Two gRPC listeners serve the same services: one requires a client certificate (X.509-SVIDs and
mapped workload certs), the other is server-TLS only for JWT-SVID bearer callers, because the
Python gRPC server either requires a client certificate or never asks for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from taskpass._proto.v1 import credential_pb2, credential_pb2_grpc
from taskpass.server.api.authz import Access, AuthorizationInterceptor
from taskpass.server.api.credential_servicer import CredentialServicer
from taskpass.server.clock import Clock, SystemClock
from taskpass.server.config import ServerConfig
from taskpass.server.errors import ConfigError
from taskpass.server.http.app import JWKS_PATH, build_http_app, start_http
from taskpass.server.identity.attestor import Attestor
from taskpass.server.identity.bundles import TrustBundles
from taskpass.server.identity.jwt_svid import JwtSvidVerifier
from taskpass.server.identity.mapped_cert import CertMappingRule, MappedCertVerifier
from taskpass.server.identity.x509_svid import X509SvidVerifier
from taskpass.server.issuer.keys import KeyRing
from taskpass.server.issuer.metadata import authorization_server_metadata
from taskpass.server.issuer.tokens import TokenIssuer
from taskpass.server.issuer.verify import TokenVerifier
from taskpass.server.policy.engine import PolicyEngine
from taskpass.server.store.base import Store
from taskpass.server.store.factory import open_store
from taskpass.server.tasks.service import StaticPolicy, TaskService

log = logging.getLogger("taskpass.server")

CREDENTIAL_SERVICE = credential_pb2.DESCRIPTOR.services_by_name["CredentialService"].full_name

#: Who may call what. A method missing here is denied (see api/authz.py).
AUTHORIZATION: dict[str, Access] = {
    f"/{CREDENTIAL_SERVICE}/Exchange": Access.ANY_WORKLOAD,
    f"/{CREDENTIAL_SERVICE}/CompleteTask": Access.ANY_WORKLOAD,
    f"/{CREDENTIAL_SERVICE}/Introspect": Access.ANY_WORKLOAD,
    f"/{CREDENTIAL_SERVICE}/GetJwks": Access.ANY_WORKLOAD,
    "/grpc.health.v1.Health/Check": Access.PUBLIC,
    "/grpc.health.v1.Health/Watch": Access.PUBLIC,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Access.PUBLIC,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": Access.PUBLIC,
}


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from exc


@dataclass
class Ports:
    mtls: int = 0
    tls: int | None = None
    http: int | None = None


@dataclass
class TaskpassServer:
    """A running server. Build it with `TaskpassServer.start(config)`; stop it with `stop()`."""

    config: ServerConfig
    store: Store
    keys: KeyRing
    bundles: TrustBundles
    tasks: TaskService
    ports: Ports = field(default_factory=Ports)
    _grpc: list[grpc.aio.Server] = field(default_factory=list)
    _http: web.AppRunner | None = None
    _background: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(cls, config: ServerConfig, *, clock: Clock | None = None) -> TaskpassServer:
        clock = clock or SystemClock()
        if config.dev_mode:
            log.warning(
                "DEV MODE: unsigned policy accepted, dev PKI in use. Never run this in production."
            )
        bundles = TrustBundles({td.name: list(td.bundle_files) for td in config.trust_domains})
        att = config.attestation
        mapped = (
            MappedCertVerifier(
                [
                    CertMappingRule(
                        issuer_ca=r.issuer_ca_file,
                        dns_san=r.dns_san,
                        subject_cn=r.subject_cn,
                        identity=r.identity,
                    )
                    for r in att.mapped_certs
                ],
                clock,
            )
            if att.mapped_certs
            else None
        )
        attestor = Attestor(
            X509SvidVerifier(bundles, clock),
            JwtSvidVerifier(bundles, att.jwt_audience, clock, att.jwt_leeway),
            mapped,
        )
        policy = PolicyEngine.from_file(config.policy.file)
        keys = KeyRing.load_or_create(
            config.issuer.key_dir, algorithm=config.issuer.algorithm, clock=clock
        )
        issuer = TokenIssuer(issuer=config.issuer.issuer, keys=keys, clock=clock)
        verifier = TokenVerifier(issuer=config.issuer.issuer, jwks=keys.jwks, clock=clock)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        store = open_store(config.store.dsn)
        await store.open()
        tasks = TaskService(
            policy=StaticPolicy(policy),
            issuer=issuer,
            verifier=verifier,
            store=store,
            clock=clock,
        )
        server = cls(config=config, store=store, keys=keys, bundles=bundles, tasks=tasks)
        try:
            await server._serve(attestor)
        except BaseException:
            await server.stop()
            raise
        log.info(
            "taskpass serving: mTLS %s, TLS %s, HTTP %s, policy %s",
            server.ports.mtls,
            server.ports.tls,
            server.ports.http,
            policy.version,
        )
        return server

    async def _serve(self, attestor: Attestor) -> None:
        listen = self.config.listen
        cert = _read(listen.cert_file, "server certificate")
        key = _read(listen.key_file, "server key")
        client_cas = b"".join(_read(p, "client CA file") for p in listen.client_ca_files)
        health_servicer = HealthServicer()
        credential_servicer = CredentialServicer(tasks=self.tasks, jwks=self.keys.jwks)
        interceptor = AuthorizationInterceptor(attestor=attestor, table=AUTHORIZATION)
        options = [
            ("grpc.max_receive_message_length", listen.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]

        def build() -> grpc.aio.Server:
            server = grpc.aio.server(interceptors=[interceptor], options=options)
            credential_pb2_grpc.add_CredentialServiceServicer_to_server(credential_servicer, server)
            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
            reflection.enable_server_reflection(
                (
                    CREDENTIAL_SERVICE,
                    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                    reflection.SERVICE_NAME,
                ),
                server,
            )
            return server

        mtls = build()
        self.ports.mtls = mtls.add_secure_port(
            listen.mtls_address,
            grpc.ssl_server_credentials(
                [(key, cert)], root_certificates=client_cas, require_client_auth=True
            ),
        )
        self._grpc.append(mtls)
        if listen.tls_address:
            tls = build()
            self.ports.tls = tls.add_secure_port(
                listen.tls_address, grpc.ssl_server_credentials([(key, cert)])
            )
            self._grpc.append(tls)
        for server in self._grpc:
            await server.start()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await health_servicer.set(CREDENTIAL_SERVICE, health_pb2.HealthCheckResponse.SERVING)

        if listen.http_address:
            http_app = build_http_app(
                jwks=self.keys.jwks,
                metadata=self._metadata,
                ready=self._ready,
            )
            self._http, self.ports.http = await start_http(http_app, listen.http_address)
        self._background.append(asyncio.create_task(self._reload_bundles()))

    def _metadata(self) -> dict[str, Any]:
        issuer = self.config.issuer.issuer.rstrip("/")
        return authorization_server_metadata(issuer, issuer + JWKS_PATH)

    async def _ready(self) -> bool:
        return True

    async def _reload_bundles(self) -> None:
        interval = self.config.attestation.bundle_reload_interval.total_seconds() or 5.0
        while True:
            await asyncio.sleep(interval)
            # A broken file keeps the bundles in force; reload_if_changed logs why.
            await asyncio.to_thread(self.bundles.reload_if_changed)

    async def stop(self, grace: float = 2.0) -> None:
        for task in self._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(s.stop(grace) for s in self._grpc))
        if self._http is not None:
            await self._http.cleanup()
        await self.store.close()

    async def wait(self) -> None:
        await asyncio.gather(*(s.wait_for_termination() for s in self._grpc))


async def serve_forever(config: ServerConfig, stop_signals: Sequence[int] = ()) -> None:
    server = await TaskpassServer.start(config)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in stop_signals:
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("shutting down")
    await server.stop()
