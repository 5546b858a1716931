"""Tools for fuzzing the real server with hypothesis.

The server runs on the test's event loop; hypothesis drives a blocking gRPC client in a worker
thread (`await asyncio.to_thread(fuzz)`), so the two never wait on each other.

- `FUZZ`: the settings profile (modest example counts, no deadline); TASKPASS_FUZZ_SCALE=10
  runs ten times as many examples for a longer campaign.
- `messages(descriptor)`: any message of a protobuf type, with random field values and sizes.
- `METHODS`: every unary and server-streaming RPC of the taskpass services, with who calls it.
- `call(...)`: one call, returning its status code; `assert_never_internal` is the property.
- `assert_still_serving`: after a fuzz, the server issues a credential and says SERVING, the
  store holds no task without a credential nor a credential without its issuance audit record,
  and the audit chain verifies.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor as pbd
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from taskpass._proto.v1 import admin_pb2, approval_pb2, credential_pb2, revocation_pb2
from taskpass.client import RevocationAdmin, Task
from taskpass.server.store.sqlite import SqliteStore
from tests.integration.harness import ADMIN, BILLING_BOT, Harness
from tests.support.pki import EXAMPLE, TestPki

APPROVER = f"spiffe://{EXAMPLE}/humans/approvers/alice"

settings.register_profile(
    "taskpass-fuzz",
    max_examples=int(100 * float(os.environ.get("TASKPASS_FUZZ_SCALE", "1"))),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
FUZZ = settings.get_profile("taskpass-fuzz")


def fuzz_settings(examples: int) -> settings:
    """The profile with `examples` examples (times TASKPASS_FUZZ_SCALE)."""
    scale = float(os.environ.get("TASKPASS_FUZZ_SCALE", "1"))
    return settings(FUZZ, max_examples=max(1, int(examples * scale)))


# Statuses that say the server failed rather than refused: never acceptable for any input.
NEVER = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})


def assert_never_internal(code: grpc.StatusCode, details: str | None) -> None:
    assert code not in NEVER, f"{code.name}: {details}"
    assert "Traceback" not in (details or "")


# -- messages ---------------------------------------------------------------------------------

_INTERESTING = [
    "",
    "spiffe://example.org/agents/billing-bot",
    "spiffe://example.org/agents/*",
    "spiffe://example.org/**",
    "payments-api",
    "read",
    "write",
    "delete",
    "*",
    "../..",
    "\x00",
    "dec_AAAA",
    "apr_AAAA",
    "eyJhbGciOiJub25lIn0.e30.",
    "a" * 300,
]
_TEXT = st.one_of(
    st.sampled_from(_INTERESTING),
    st.text(max_size=30),
    st.text(max_size=2000),
)
_INT32 = st.integers(-(2**31), 2**31 - 1)
_INT64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-5, 4000))
_UINT32 = st.integers(0, 2**32 - 1)
_UINT64 = st.integers(0, 2**64 - 1)
_FD = pbd.FieldDescriptor

_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    _FD.TYPE_STRING: _TEXT,
    _FD.TYPE_BYTES: st.binary(max_size=2000),
    _FD.TYPE_BOOL: st.booleans(),
    _FD.TYPE_INT32: _INT32,
    _FD.TYPE_SINT32: _INT32,
    _FD.TYPE_SFIXED32: _INT32,
    _FD.TYPE_INT64: _INT64,
    _FD.TYPE_SINT64: _INT64,
    _FD.TYPE_SFIXED64: _INT64,
    _FD.TYPE_UINT32: _UINT32,
    _FD.TYPE_FIXED32: _UINT32,
    _FD.TYPE_UINT64: _UINT64,
    _FD.TYPE_FIXED64: _UINT64,
    _FD.TYPE_DOUBLE: st.floats(),
    _FD.TYPE_FLOAT: st.floats(width=32),
    _FD.TYPE_ENUM: st.integers(-3, 12),  # known values and unknown ones
}


def _value(field: pbd.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None:
        return messages(field.message_type, depth + 1)
    return _SCALARS[field.type]


def _is_map(field: pbd.FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and bool(entry.GetOptions().map_entry)


def _is_repeated(field: pbd.FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def messages(descriptor: pbd.Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of `descriptor`'s type: each field absent or set to a random value (nested
    messages, repeated fields and maps included, up to three levels deep)."""
    cls = GetMessageClass(descriptor)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        if depth > 3:
            return message
        for field in descriptor.fields:
            if not draw(st.booleans()):
                continue
            target = getattr(message, field.name)
            if _is_map(field):
                entry = field.message_type
                assert entry is not None
                key_field = entry.fields_by_name["key"]
                value_field = entry.fields_by_name["value"]
                entries = draw(
                    st.dictionaries(
                        _value(key_field, depth), _value(value_field, depth), max_size=40
                    )
                )
                for key, value in entries.items():
                    if value_field.type == _FD.TYPE_MESSAGE:
                        target[key].CopyFrom(value)
                    else:
                        target[key] = value
            elif _is_repeated(field):
                values = draw(st.lists(_value(field, depth), max_size=5))
                if field.type == _FD.TYPE_MESSAGE:
                    for value in values:
                        target.add().CopyFrom(value)
                else:
                    target.extend(values)
            elif field.type == _FD.TYPE_MESSAGE:
                target.CopyFrom(draw(_value(field, depth)))
            else:
                setattr(message, field.name, draw(_value(field, depth)))
        return message

    return build()


# -- methods ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    path: str
    request: pbd.Descriptor
    response: pbd.Descriptor
    streaming: bool
    caller: str
    """Who calls it in the fuzz: someone it is authorized for, so the handler itself runs."""

    def __repr__(self) -> str:
        return self.path


_CALLERS = {
    "taskpass.v1.CredentialService": BILLING_BOT,
    "taskpass.v1.RevocationService": ADMIN,
    "taskpass.v1.ApprovalService": APPROVER,
    "taskpass.v1.AdminService": ADMIN,
}


def _methods() -> list[Method]:
    found = []
    for module in (credential_pb2, revocation_pb2, approval_pb2, admin_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                assert not m.client_streaming
                found.append(
                    Method(
                        path=f"/{service.full_name}/{m.name}",
                        request=m.input_type,
                        response=m.output_type,
                        streaming=m.server_streaming,
                        caller=_CALLERS[service.full_name],
                    )
                )
    return found


METHODS: Sequence[Method] = tuple(_methods())


def mtls_channel(harness: Harness, spiffe_id: str) -> grpc.Channel:
    """A blocking mTLS channel presenting an X.509-SVID for `spiffe_id`."""
    name = "fuzz-" + spiffe_id.rsplit("/", 1)[-1]
    cert, key = TestPki.write_identity(
        harness.directory / "fuzz", name, harness.pki.leaf(spiffe_id)
    )
    return certificate_channel(harness, cert.read_bytes(), key.read_bytes())


def certificate_channel(harness: Harness, chain_pem: bytes, key_pem: bytes) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=harness.server_ca.read_bytes(),
        private_key=key_pem,
        certificate_chain=chain_pem,
    )
    return grpc.secure_channel(harness.mtls_target, creds)


def tls_channel(harness: Harness) -> grpc.Channel:
    """A blocking server-TLS channel (no client certificate), for bearer JWT-SVIDs."""
    creds = grpc.ssl_channel_credentials(root_certificates=harness.server_ca.read_bytes())
    return grpc.secure_channel(harness.tls_target, creds)


def call(
    channel: grpc.Channel,
    method: Method,
    request: bytes,
    *,
    metadata: Sequence[tuple[str, str | bytes]] = (),
    timeout: float = 1.0,
    stream_timeout: float = 0.15,
) -> grpc.StatusCode:
    """Send `request` (serialized bytes, sent as they are) and return the final status. A
    stream is read for its first two items at most (live streams then wait: that is fine)."""
    if not method.streaming:
        unary = channel.unary_unary(method.path, None, None)  # bytes in, bytes out
        try:
            unary(request, timeout=timeout, metadata=tuple(metadata))
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()
            assert_never_internal(code, error.details())
            return code
        return grpc.StatusCode.OK
    stream: Any = channel.unary_stream(method.path, None, None)(
        request, timeout=stream_timeout, metadata=tuple(metadata)
    )
    try:
        for n, _ in enumerate(stream):
            if n >= 1:
                break
    except grpc.RpcError as error:
        code = error.code()
        assert_never_internal(code, error.details())
        return code
    finally:
        stream.cancel()
    return grpc.StatusCode.OK


# -- after the fuzz ---------------------------------------------------------------------------


def assert_no_partial_records(harness: Harness) -> None:
    """Every task has a credential, every credential its issuance audit record."""
    store = harness.server.store
    assert isinstance(store, SqliteStore)
    with sqlite3.connect(f"file:{store.path}?mode=ro", uri=True) as db:
        orphan_tasks = db.execute(
            """SELECT count(*) FROM tasks t WHERE NOT EXISTS (
                 SELECT 1 FROM credentials c
                 WHERE c.requester = t.requester AND c.task_id = t.task_id)"""
        ).fetchone()[0]
        unaudited = db.execute(
            """SELECT count(*) FROM credentials c WHERE NOT EXISTS (
                 SELECT 1 FROM audit a
                 WHERE a.kind = 'issuance' AND json_extract(a.payload, '$.jti') = c.jti)"""
        ).fetchone()[0]
    assert (orphan_tasks, unaudited) == (0, 0)


async def assert_still_serving(harness: Harness) -> None:
    async with harness.agent(ADMIN) as admin:  # the fuzz may have banned anyone, legitimately
        revocations = RevocationAdmin(admin)
        for ban in await revocations.list_bans():
            await revocations.unban(ban.identity)
    async with harness.agent() as agent:
        assert (await agent.exchange(Task("after-fuzz", "payments-api", "read"))).jti
    creds = grpc.ssl_channel_credentials(root_certificates=harness.server_ca.read_bytes())
    async with grpc.aio.secure_channel(harness.tls_target, creds) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert_no_partial_records(harness)
    assert (await harness.server.components.audit.verify()).ok


def database_of(harness: Harness) -> Path:
    store = harness.server.store
    assert isinstance(store, SqliteStore)
    return store.path
