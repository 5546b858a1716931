"""A SPIFFE Workload API server for tests: the real proto (the `spiffe` package's generated
code) on a Unix socket, serving X.509-SVIDs made by TestPki, and rotating them on demand.

    agent = await WorkloadApiServer.start(directory, svid=pki.leaf(ID), bundle=[pki.example.root])
    client = await from_workload_api(target, socket_path=agent.socket)
    agent.rotate(pki.leaf(ID))            # every open FetchX509SVID stream gets the new SVID
    await agent.stop()

Like SPIRE's agent it refuses calls without the `workload.spiffe.io: true` metadata header, and
FetchX509SVID streams the current SVID first, then each rotation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from spiffe._proto import workload_pb2, workload_pb2_grpc

from taskpass.server.pki.builder import Issued

SECURITY_HEADER = ("workload.spiffe.io", "true")


@dataclass(frozen=True, slots=True)
class SvidSet:
    svid: Issued
    chain: tuple[Issued, ...]
    bundle: tuple[Issued, ...]
    spiffe_id: str

    def response(self) -> workload_pb2.X509SVIDResponse:
        key = self.svid.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return workload_pb2.X509SVIDResponse(
            svids=[
                workload_pb2.X509SVID(
                    spiffe_id=self.spiffe_id,
                    x509_svid=b"".join(c.der for c in (self.svid, *self.chain)),
                    x509_svid_key=key,
                    bundle=b"".join(c.der for c in self.bundle),
                )
            ]
        )


class _Servicer(workload_pb2_grpc.SpiffeWorkloadAPIServicer):
    def __init__(self, current: SvidSet) -> None:
        self.current = current
        self.streams: list[asyncio.Queue[SvidSet]] = []
        self.idle = asyncio.Event()
        self.idle.set()

    async def FetchX509SVID(
        self, request: workload_pb2.X509SVIDRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[workload_pb2.X509SVIDResponse]:
        if SECURITY_HEADER not in tuple(context.invocation_metadata() or ()):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "security header missing from request"
            )
        updates: asyncio.Queue[SvidSet] = asyncio.Queue()
        self.streams.append(updates)
        self.idle.clear()
        try:
            yield self.current.response()
            while True:
                yield (await updates.get()).response()
        finally:
            self.streams.remove(updates)
            if not self.streams:
                self.idle.set()


class WorkloadApiServer:
    def __init__(self, server: grpc.aio.Server, servicer: _Servicer, socket: str) -> None:
        self._server = server
        self._servicer = servicer
        self.socket = socket
        """The endpoint to give a client: `unix:///...`."""

    @classmethod
    async def start(
        cls,
        directory: Path,
        *,
        svid: Issued,
        bundle: Sequence[Issued],
        chain: Sequence[Issued] = (),
        spiffe_id: str = "",
    ) -> WorkloadApiServer:
        # Unix socket paths are limited to ~100 bytes: keep the name short.
        path = directory / "agent.sock"
        servicer = _Servicer(SvidSet(svid, tuple(chain), tuple(bundle), spiffe_id))
        server = grpc.aio.server()
        workload_pb2_grpc.add_SpiffeWorkloadAPIServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(f"unix:{path}")
        await server.start()
        return cls(server, servicer, f"unix://{path}")

    @property
    def streams(self) -> int:
        """How many FetchX509SVID streams are open now."""
        return len(self._servicer.streams)

    async def wait_idle(self) -> None:
        """Until no FetchX509SVID stream is open (clients closed their sources)."""
        await self._servicer.idle.wait()

    def rotate(
        self,
        svid: Issued,
        *,
        bundle: Sequence[Issued] | None = None,
        chain: Sequence[Issued] = (),
        spiffe_id: str = "",
    ) -> None:
        """Serve `svid` from now on, and push it down every open stream (as an agent does)."""
        current = self._servicer.current
        self._servicer.current = SvidSet(
            svid, tuple(chain), current.bundle if bundle is None else tuple(bundle), spiffe_id
        )
        for stream in self._servicer.streams:
            stream.put_nowait(self._servicer.current)

    async def stop(self) -> None:
        await self._server.stop(grace=None)
