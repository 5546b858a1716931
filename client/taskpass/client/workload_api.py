"""A TaskpassClient whose identity comes from the SPIFFE Workload API (a SPIRE agent's socket).

    client = await from_workload_api("taskpass.internal:8443")   # SPIFFE_ENDPOINT_SOCKET, or
    client = await from_workload_api(target, socket_path="unix:///run/spire/agent.sock")

The `spiffe` package's X509Source keeps the current X.509-SVID and bundles, streamed from the
agent; when the agent rotates the SVID (it does, well before expiry) the client's channel is
rebuilt with the new certificate at the next call (see rotating_channel.py), without a restart.
The server's certificate is checked against the X.509 bundle of `server_trust_domain` (default:
the SVID's own) from the same stream, or against `ca` when given. grpcio checks the server's DNS
name, not its SPIFFE ID, so the target (or `server_name`) must be a DNS SAN of the server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from spiffe import TrustDomain, X509Source
from spiffe.errors import ArgumentError, PySpiffeError

from taskpass.client.client import TaskpassClient
from taskpass.client.errors import InvalidRequest, Unavailable
from taskpass.client.rotating_channel import RotatingChannel

_PEM = serialization.Encoding.PEM


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """PEM inputs of one set of channel credentials; equal material means the same channel."""

    certificate_chain: bytes
    private_key: bytes = field(repr=False)
    root_certificates: bytes


def tls_material(
    source: X509Source, *, server_trust_domain: str | None = None, ca: bytes | None = None
) -> TlsMaterial:
    """The current SVID (leaf and intermediates), its key, and the roots to check the server."""
    try:
        context = source.get_x509_context()
    except PySpiffeError as exc:
        raise Unavailable(
            f"the Workload API source has no usable X.509-SVID ({exc}); is the agent running?"
        ) from exc
    svid = context.default_svid
    chain = b"".join(cert.public_bytes(_PEM) for cert in svid.cert_chain)
    key = svid.private_key.private_bytes(
        _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    if ca is None:
        domain = TrustDomain(server_trust_domain) if server_trust_domain else None
        domain = domain or svid.spiffe_id.trust_domain
        bundle = context.x509_bundle_set.get_bundle_for_trust_domain(domain)
        if bundle is None or not bundle.x509_authorities:
            raise InvalidRequest(
                f"the Workload API sent no X.509 bundle for trust domain {domain}: set "
                "server_trust_domain to the server's trust domain (federate it in SPIRE), or ca"
            )
        # sorted: the same authorities in another order are the same roots (no rebuild)
        ca = b"".join(sorted(cert.public_bytes(_PEM) for cert in bundle.x509_authorities))
    return TlsMaterial(certificate_chain=chain, private_key=key, root_certificates=ca)


def from_x509_source(
    target: str,
    source: X509Source,
    *,
    server_trust_domain: str | None = None,
    ca: str | Path | None = None,
    server_name: str | None = None,
    timeout: float = 10.0,
    close_source: bool = False,
    retire_grace: float = 30.0,
) -> TaskpassClient:
    """A client on an open X509Source. It follows the source's updates; `close_source` makes
    the client's `aclose()` close the source too (otherwise the caller closes it)."""
    roots = _read(ca) if ca is not None else None

    def material() -> TlsMaterial:
        return tls_material(source, server_trust_domain=server_trust_domain, ca=roots)

    def build(current: TlsMaterial) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=current.root_certificates,
            private_key=current.private_key,
            certificate_chain=current.certificate_chain,
        )
        options: list[tuple[str, Any]] = (
            [("grpc.ssl_target_name_override", server_name)] if server_name else []
        )
        return grpc.aio.secure_channel(target, credentials, options)

    def on_close() -> None:
        source.unsubscribe_for_updates(channel.invalidate)
        if close_source:
            source.close()

    material()  # fail now, not at the first call, if the source cannot serve this client
    channel = RotatingChannel(
        material=material, build=build, on_close=on_close, retire_grace=retire_grace
    )
    source.subscribe_for_updates(channel.invalidate)
    return TaskpassClient(channel, timeout=timeout)


async def from_workload_api(
    target: str,
    *,
    socket_path: str | None = None,
    startup_timeout: float = 10.0,
    server_trust_domain: str | None = None,
    ca: str | Path | None = None,
    server_name: str | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109 - the client's per-call timeout, not this call's
) -> TaskpassClient:
    """A client whose SVID comes from the Workload API at `socket_path` (`unix:///path`; default
    the SPIFFE_ENDPOINT_SOCKET environment variable). Waits up to `startup_timeout` seconds for
    the first SVID. The client owns the source: `aclose()` closes both."""
    try:
        # X509Source blocks until the agent answers: keep the event loop free meanwhile.
        source = await asyncio.to_thread(
            X509Source, socket_path=socket_path, timeout_in_seconds=startup_timeout
        )
    except ArgumentError as exc:
        raise InvalidRequest(
            f"Workload API socket: {exc}; give socket_path='unix:///path/to/agent.sock' or set "
            "SPIFFE_ENDPOINT_SOCKET"
        ) from exc
    except PySpiffeError as exc:
        raise Unavailable(
            f"no X.509-SVID from the Workload API within {startup_timeout:g}s ({exc}); is the "
            "SPIRE agent running, and is this workload registered with it?"
        ) from exc
    try:
        return from_x509_source(
            target,
            source,
            server_trust_domain=server_trust_domain,
            ca=ca,
            server_name=server_name,
            timeout=timeout,
            close_source=True,
        )
    except BaseException:
        source.close()
        raise


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc.strerror}") from exc
