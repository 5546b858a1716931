"""Producing compact JWS (RFC 7515 §7.1): JSON, base64url and one signature call.

Signing only. Measured against joserfc's `jwt.encode` this saves about a third of the cost of an
issue on the hot path; parsing and verifying tokens is never done here but by joserfc (server) or
any JOSE library (relying parties).
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Mapping
from typing import Any, Final

from taskpass.server.issuer.keys import SigningKey

# One encoder reused: `json.dumps` with non-default options builds a new encoder on every call.
_JSON: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def b64url(data: bytes) -> bytes:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def json_segment(value: Mapping[str, Any]) -> bytes:
    return b64url(_JSON.encode(value).encode())


@functools.lru_cache(maxsize=64)
def header_segment(alg: str, kid: str, typ: str) -> bytes:
    """The protected header, encoded once per (key, type) rather than once per token."""
    return json_segment({"typ": typ, "alg": alg, "kid": kid})


def sign_segments(key: SigningKey, header: bytes, payload: bytes) -> str:
    """`header.payload.signature` from already-encoded header and payload segments."""
    signing_input = header + b"." + payload
    return (signing_input + b"." + b64url(key.sign(signing_input))).decode("ascii")


def sign_compact(key: SigningKey, *, typ: str, claims: Mapping[str, Any]) -> str:
    """A compact JWS of `claims` with header {typ, alg, kid}, signed by `key`."""
    return sign_segments(key, header_segment(key.alg, key.kid, typ), json_segment(claims))
