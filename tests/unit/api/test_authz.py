"""The interceptor reuses a method's wrapper, yet attests and authorizes every call anew."""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
import pytest

from taskpass.server.api.authz import (
    ANY_WORKLOAD,
    Access,
    Authorization,
    current_workload,
)
from taskpass.server.api.pipeline import CallPipeline
from taskpass.server.errors import AttestationFailed
from taskpass.server.identity.groups import Groups
from taskpass.server.identity.workload import AttestationMethod, Workload

METHOD = "/taskpass.v1.Test/Call"
ADMIN_METHOD = "/taskpass.v1.Test/Admin"
ALICE = "spiffe://example.org/agents/alice"
BOB = "spiffe://example.org/agents/bob"


class Attestor:
    """Attests the 'certificate' as the SPIFFE ID it spells (b"" fails)."""

    def attest_peer_certificate(self, leaf_pem: bytes, chain_pem: bytes | None) -> Workload:
        if not leaf_pem:
            raise AttestationFailed("X-0", "no certificate")
        return Workload(
            id=leaf_pem.decode(),
            method=AttestationMethod.X509_SVID,
            trust_domain="example.org",
            expires_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
        )

    def attest_bearer(self, authorization: str) -> Workload:
        raise AttestationFailed("J-0", "not in this test")


class Aborted(Exception):
    pass


class Context:
    def __init__(self, peer: str) -> None:
        self._peer = peer

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self._peer.encode()]}

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def trailing_metadata(self) -> tuple[()]:
        return ()

    async def abort(self, code: grpc.StatusCode, message: str, **_: Any) -> None:
        raise Aborted(code)


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


async def _whoami(request: bytes, context: Any) -> str:
    return current_workload().id


HANDLER = grpc.unary_unary_rpc_method_handler(_whoami)
TABLE: dict[str, Access] = {METHOD: ANY_WORKLOAD, ADMIN_METHOD: Access.members_of("admins")}


async def _call(interceptor: CallPipeline, method: str, peer: str) -> Any:
    async def continuation(details: Any) -> Any:
        return HANDLER

    handler: Any = await interceptor.intercept_service(continuation, Details(method))
    return await handler.unary_unary(b"", Context(peer))


@pytest.fixture
def interceptor() -> CallPipeline:
    return CallPipeline(
        authorization=Authorization(
            attestor=Attestor(), table=TABLE, groups=Groups({"admins": [ALICE]})
        )
    )


async def test_each_call_is_attested_as_its_own_caller(
    interceptor: CallPipeline,
) -> None:
    assert await _call(interceptor, METHOD, ALICE) == ALICE
    assert await _call(interceptor, METHOD, BOB) == BOB


async def test_a_failed_attestation_after_a_good_one_is_still_refused(
    interceptor: CallPipeline,
) -> None:
    await _call(interceptor, METHOD, ALICE)

    with pytest.raises(Aborted) as refused:
        await _call(interceptor, METHOD, "")
    assert refused.value.args[0] is grpc.StatusCode.UNAUTHENTICATED


async def test_group_checks_apply_per_caller_on_the_same_method(
    interceptor: CallPipeline,
) -> None:
    assert await _call(interceptor, ADMIN_METHOD, ALICE) == ALICE

    with pytest.raises(Aborted) as refused:
        await _call(interceptor, ADMIN_METHOD, BOB)
    assert refused.value.args[0] is grpc.StatusCode.PERMISSION_DENIED
