"""Who is calling: turns a gRPC peer (client certificate or bearer JWT-SVID) into a Workload."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import grpc

from taskpass.server.errors import AttestationFailed
from taskpass.server.identity.workload import Workload


class PeerAttestor(Protocol):
    def attest_peer_certificate(self, leaf_pem: bytes, chain_pem: bytes | None) -> Workload: ...

    def attest_bearer(self, authorization: str) -> Workload: ...


def _first(values: Iterable[bytes] | None) -> bytes | None:
    return next(iter(values), None) if values else None


def authenticate(
    attestor: PeerAttestor, context: grpc.aio.ServicerContext[object, object]
) -> Workload:
    """Attest the caller of this call; raises AttestationFailed.

    grpcio's handshake is not a SPIFFE check (see DESIGN.md), so the presented chain is always
    validated again here, against the bundle of the ID's own trust domain.
    """
    auth = context.auth_context()
    leaf = _first(auth.get("x509_pem_cert"))
    if leaf is not None:
        return attestor.attest_peer_certificate(leaf, _first(auth.get("x509_pem_cert_chain")))
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return attestor.attest_bearer(value if isinstance(value, str) else value.decode())
    raise AttestationFailed(
        "AUTH-1",
        "no client certificate and no 'authorization: Bearer <JWT-SVID>' metadata; "
        "connect with an X.509-SVID over mTLS or send a JWT-SVID over TLS",
    )
