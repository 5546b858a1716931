from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from taskpass._proto.v1 import credential_pb2
from taskpass.client.errors import InvalidRequest, Unavailable
from taskpass.client.jwks import MAX_JWKS_BYTES, GrpcJwks, HttpJwks, JwksCache, import_keys
from taskpass.server.clock import FixedClock
from taskpass.server.issuer.keys import SigningKey
from tests.unit.client.conftest import CountingJwks, FakeChannel
from tests.unit.client.factories import jwks, signing_key

Handler = Callable[[web.Request], Any]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Any]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_get("/jwks.json", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/jwks.json"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_the_jwks_document_is_fetched_over_http(
    serve: Callable[[Handler], Any], key: SigningKey
) -> None:
    async def handler(_: web.Request) -> web.Response:
        return web.json_response(jwks(key))

    url = await serve(handler)
    assert await HttpJwks(url).fetch() == jwks(key)


async def test_a_jwks_that_arrives_in_pieces_is_read_whole(
    serve: Callable[[Handler], Any], key: SigningKey
) -> None:
    body = json.dumps(jwks(key, *(signing_key() for _ in range(20)))).encode()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(body)
        await response.prepare(request)
        for start in range(0, len(body), 100):
            await response.write(body[start : start + 100])
            for _ in range(2):  # let the client read each piece as it arrives
                await asyncio.sleep(0)
        await response.write_eof()
        return response

    document = await HttpJwks(await serve(handler)).fetch()
    assert len(document["keys"]) == 21


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (lambda: web.Response(status=503), "answered HTTP 503"),
        (lambda: web.Response(body=b"<html>"), "not JSON"),
        (lambda: web.json_response([1, 2]), "not a JSON object"),
        (lambda: web.Response(body=b" " * (MAX_JWKS_BYTES + 1)), "larger than"),
        (lambda: web.Response(status=302, headers={"Location": "http://x/"}), "HTTP 302"),
        (lambda: web.Response(body=b"[" * 100_000 + b"]" * 100_000), "nested too deeply"),
    ],
    ids=["status", "not-json", "not-an-object", "too-large", "no-redirects", "deeply-nested"],
)
async def test_a_bad_jwks_response_is_unavailable_with_what_was_wrong(
    serve: Callable[[Handler], Any], response: Callable[[], web.Response], message: str
) -> None:
    async def handler(_: web.Request) -> web.Response:
        return response()

    with pytest.raises(Unavailable, match=message):
        await HttpJwks(await serve(handler)).fetch()


async def test_nothing_listening_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="cannot fetch the JWKS"):
        await HttpJwks("http://127.0.0.1:9/jwks.json", timeout=2).fetch()


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(InvalidRequest, match="http:// or https://"):
        HttpJwks("file:///etc/passwd")


def test_only_signing_keys_of_allowed_algorithms_are_imported(key: SigningKey) -> None:
    ed = signing_key("EdDSA")
    document = jwks(key, ed)
    document["keys"] += [
        {**key.public_jwk(), "kid": "enc", "use": "enc"},
        {**key.public_jwk(), "kid": "rs", "alg": "RS256"},
        {"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"},
        {**key.public_jwk(), "kid": ""},
        {"kty": "EC", "crv": "P-256", "kid": "broken", "x": "AA", "y": "AA"},
        "not a key",
    ]
    assert set(import_keys(document, algorithms=["ES256", "EdDSA"], source="t")) == {
        key.kid,
        ed.kid,
    }
    assert set(import_keys(document, algorithms=["ES256"], source="t")) == {key.kid}


def test_a_document_without_keys_is_not_a_jwk_set() -> None:
    with pytest.raises(Unavailable, match="no 'keys' array"):
        import_keys({"kid": "x"}, algorithms=["ES256"], source="t")


@pytest.mark.parametrize(
    "entry",
    [
        {"kid": "junk", "kty": "EC", "crv": []},
        {"kid": "junk", "kty": {"EC": 1}, "crv": "P-256"},
        {"kid": ["junk"], "kty": "EC", "crv": "P-256"},
        {"kid": "junk", "kty": "EC", "crv": "P-256", "alg": ["ES256"]},
    ],
    ids=["crv-a-list", "kty-an-object", "kid-a-list", "alg-a-list"],
)
def test_an_entry_with_a_field_of_the_wrong_type_is_skipped(
    key: SigningKey, entry: dict[str, Any]
) -> None:
    document = {"keys": [entry, key.public_jwk()]}
    for algorithms in (["ES256"], frozenset({"ES256"})):
        assert set(import_keys(document, algorithms=algorithms, source="t")) == {key.kid}


def _get_jwks(reply: str) -> GrpcJwks:
    async def answer(_: credential_pb2.GetJwksRequest) -> credential_pb2.GetJwksResponse:
        return credential_pb2.GetJwksResponse(jwks_json=reply)

    channel = FakeChannel({"/taskpass.v1.CredentialService/GetJwks": answer})
    return GrpcJwks(channel.client())


async def test_the_jwks_document_is_fetched_over_grpc(key: SigningKey) -> None:
    assert await _get_jwks(json.dumps(jwks(key))).fetch() == jwks(key)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("<html>", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
    ids=["not-json", "not-an-object", "deeply-nested"],
)
async def test_a_bad_get_jwks_reply_is_unavailable_with_what_was_wrong(
    reply: str, message: str
) -> None:
    with pytest.raises(Unavailable, match=f"the JWKS from the GetJwks RPC .*{message}"):
        await _get_jwks(reply).fetch()


async def test_an_unknown_kid_the_jwks_cannot_be_refetched_for_may_be_unavailable(
    key: SigningKey, clock: FixedClock
) -> None:
    # For the revocation stream, which can retry an event later rather than lose it.
    source = CountingJwks(jwks(key))
    cache = JwksCache(source, algorithms=["ES256"], clock=clock)
    assert await cache.key(key.kid, confirm_unknown=True) is not None
    source.fail = True
    with pytest.raises(Unavailable, match="cannot tell whether kid rotated is published"):
        await cache.key("rotated", confirm_unknown=True)  # the refetch failed
    source.fail = False
    with pytest.raises(Unavailable, match="cannot tell whether kid rotated is published"):
        await cache.key("rotated", confirm_unknown=True)  # within the refetch cooldown
    assert await cache.key("rotated") is None  # a verifier's answer: not published
    clock.advance(dt.timedelta(seconds=30))
    assert await cache.key("rotated", confirm_unknown=True) is None  # refetched: not published
    assert source.fetches == 3
