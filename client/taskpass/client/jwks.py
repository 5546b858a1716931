"""Where a verifier gets taskpass's public signing keys, and the cache that holds them.

Sources: `HttpJwks` (`/.well-known/jwks.json`, what Envoy and any JOSE stack use), `GrpcJwks`
(the `GetJwks` RPC over an existing client), `StaticJwks` (a document you already have).

`JwksCache` refreshes the keys every `max_age`, and once more when a token names a kid it does
not know (the server publishes a new key before signing with it, so an unknown kid usually means
our copy is old). Refetches for unknown kids are at least `refetch_cooldown` apart, so a flood of
tokens with made-up kids cannot turn the verifier into a load generator against the JWKS endpoint.
When a refresh fails the keys already held stay in use (retried no more often than the cooldown);
only the very first fetch failing is an error, and while it keeps failing it too is retried no
more often than the cooldown (each token in between is Unavailable at once, without a fetch).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import ssl
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeGuard

import aiohttp
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key

from taskpass.client.clock import Clock, SystemClock
from taskpass.client.errors import InvalidRequest, Unavailable

if TYPE_CHECKING:
    from taskpass.client.client import TaskpassClient

log = logging.getLogger(__name__)

JWKS_PATH: Final = "/.well-known/jwks.json"
MAX_JWKS_BYTES: Final = 256 * 1024
MAX_KEYS: Final = 64
# Which JWK key type and curve each allowed algorithm needs (RFC 7518 §3.4, RFC 8037 §3.1).
KEY_TYPES: Final[Mapping[str, tuple[str, str]]] = {
    "ES256": ("EC", "P-256"),
    "EdDSA": ("OKP", "Ed25519"),
}


class JwksSource(Protocol):
    """Fetches a JWK Set document (RFC 7517 §5)."""

    @property
    def name(self) -> str:
        """Where the keys come from, for error messages (a URL, "GetJwks", ...)."""
        ...

    async def fetch(self) -> Mapping[str, Any]: ...


class HttpJwks:
    """GET a JWKS URL, e.g. `http://localhost:8080/.well-known/jwks.json`.

    `ssl_context` verifies an https server (the system's default CAs when None).
    """

    def __init__(
        self, url: str, *, timeout: float = 5.0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise InvalidRequest(f"JWKS URL must be http:// or https://, not {url!r}")
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True

    @property
    def name(self) -> str:
        return self._url

    async def fetch(self) -> Mapping[str, Any]:
        try:
            # One session per fetch: fetches are minutes apart, and nothing is left to close.
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.get(self._url, ssl=self._ssl, allow_redirects=False) as response,
            ):
                if response.status != 200:
                    raise Unavailable(f"GET {self._url} answered HTTP {response.status}")
                body = bytearray()
                # read(n) returns what has arrived, not n bytes: collect to the end, bounded
                async for chunk in response.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise Unavailable(
                            f"the JWKS at {self._url} is larger than {MAX_JWKS_BYTES} bytes"
                        )
        except aiohttp.ClientError as exc:
            raise Unavailable(f"cannot fetch the JWKS from {self._url}: {exc}") from exc
        except TimeoutError as exc:
            raise Unavailable(f"fetching the JWKS from {self._url} timed out") from exc
        return parse_document(body, source=self._url)


def parse_document(body: str | bytes | bytearray, *, source: str) -> dict[str, Any]:
    """A fetched JWKS body as a JSON object, or Unavailable saying what is wrong with it."""
    try:
        document = json.loads(body)
    except RecursionError as exc:  # json's parser recurses once per nesting level
        raise Unavailable(f"the JWKS from {source} is nested too deeply to be a JWK Set") from exc
    except ValueError as exc:
        raise Unavailable(f"the JWKS from {source} is not JSON") from exc
    if not isinstance(document, dict):
        raise Unavailable(f"the JWKS from {source} is not a JSON object")
    return document


class GrpcJwks:
    """The `GetJwks` RPC of an open client (the caller keeps ownership of the client)."""

    def __init__(self, client: TaskpassClient) -> None:
        self._client = client

    @property
    def name(self) -> str:
        return "the GetJwks RPC"

    async def fetch(self) -> Mapping[str, Any]:
        return await self._client.jwks()


class StaticJwks:
    """A JWKS document held in memory (tests, air-gapped relying parties)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document

    @property
    def name(self) -> str:
        return "a static JWKS"

    async def fetch(self) -> Mapping[str, Any]:
        return self.document


def import_keys(
    document: Mapping[str, Any], *, algorithms: Collection[str], source: str
) -> dict[str, Key]:
    """The usable signing keys of a JWKS, by kid.

    A key is skipped (and logged) when it has no kid, is for encryption, names an algorithm not
    allowed here, or is not the key type those algorithms need; so is an entry that is not a JSON
    object or whose kid, kty, crv or alg is not a string (logged once per document), rather than
    one such entry breaking every verification. A whole document that is not a JWK Set is an
    error.
    """
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise Unavailable(f"{source} did not return a JWK Set (no 'keys' array)")
    allowed_types = {KEY_TYPES[alg] for alg in algorithms}
    keys: dict[str, Key] = {}
    malformed = 0
    for entry in entries[:MAX_KEYS]:
        if not _well_typed(entry):
            malformed += 1
            continue
        kid, use, alg = entry.get("kid"), entry.get("use"), entry.get("alg")
        if not isinstance(kid, str) or not kid:
            log.warning("JWKS from %s: skipping a key without a kid", source)
            continue
        if use not in (None, "sig") or (alg is not None and alg not in algorithms):
            continue
        if (entry.get("kty"), entry.get("crv")) not in allowed_types:
            continue
        try:
            keys[kid] = JWKRegistry.import_key(entry)
        except (JoseError, ValueError, TypeError) as exc:
            log.warning("JWKS from %s: skipping key %s: %s", source, kid, exc)
    if malformed:
        log.warning(
            "JWKS from %s: skipping %d malformed entries (not an object, or a kid, kty, crv or "
            "alg that is not a string)",
            source,
            malformed,
        )
    return keys


def _well_typed(entry: object) -> TypeGuard[dict[str, Any]]:
    """An object whose members used for lookups are strings where present: others are not
    hashable or comparable as the lookups need (a list crv raised TypeError)."""
    return isinstance(entry, dict) and all(
        isinstance(entry.get(name, ""), str) for name in ("kid", "kty", "crv", "alg")
    )


class JwksCache:
    """Signing keys by kid, fetched from `source` and kept fresh (see the module docstring)."""

    def __init__(
        self,
        source: JwksSource,
        *,
        algorithms: Collection[str],
        max_age: dt.timedelta = dt.timedelta(minutes=5),
        refetch_cooldown: dt.timedelta = dt.timedelta(seconds=30),
        clock: Clock | None = None,
    ) -> None:
        self._source = source
        self._algorithms = tuple(algorithms)
        self._max_age = max_age
        self._cooldown = refetch_cooldown
        self._clock = clock or SystemClock()
        self._keys: dict[str, Key] | None = None
        self._fetched_at: dt.datetime | None = None
        self._attempted_at: dt.datetime | None = None
        self._refetched_at: dt.datetime | None = None
        self._fetches = 0
        self._loads = 0  # fetches that succeeded
        self._failure: str | None = None  # why the last fetch failed; None once one succeeds
        self._lock = asyncio.Lock()

    @property
    def source(self) -> JwksSource:
        return self._source

    @property
    def fetches(self) -> int:
        """How many fetches were attempted (for tests and metrics)."""
        return self._fetches

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys or ())

    async def key(self, kid: str, *, confirm_unknown: bool = False) -> Key | None:
        """The key for `kid`, refreshing first if the cache is old or does not know the kid;
        None when no published key has it.

        With `confirm_unknown`, None only once keys fetched during this call lack it too: when
        they could not be (the refetch failed, or the last one is within the cooldown) it is
        Unavailable, "cannot tell yet", for a caller that can retry later rather than lose what
        a token signed by a just-published key says (the revocation watcher).
        """
        now = self._clock.now()
        fetched, loaded = self._fetches, self._loads
        if self._keys is None:
            self._refuse_within_cooldown(now)
            await self.refresh(force=True)
        elif self._due(now):
            await self.refresh(force=False)
        assert self._keys is not None  # refresh(force=True) raises rather than leave it unset
        key = self._keys.get(kid)
        if key is None and fetched == self._fetches and self._may_refetch(now):
            self._refetched_at = now
            await self.refresh(force=False)
            key = self._keys.get(kid)
        if key is None and confirm_unknown and loaded == self._loads:
            cooldown = self._cooldown.total_seconds()
            why = self._failure or f"the last refetch was less than {cooldown:g} s ago"
            raise Unavailable(
                f"cannot tell whether kid {kid} is published: the JWKS from {self._source.name} "
                f"could not be fetched again ({why}); retrying after the cooldown"
            )
        return key

    async def refresh(self, *, force: bool = True) -> None:
        """Fetch the keys now. Raises Unavailable if there are no keys to fall back on, or if
        `force` (an explicit refresh); otherwise a failure is logged and the old keys stay."""
        seen = self._fetches
        async with self._lock:
            if self._fetches != seen:  # another caller fetched while we waited: its result
                if self._keys is not None:
                    return
                raise Unavailable(f"no JWKS yet: {self._failure or 'the fetch failed'}")
            self._fetches += 1
            self._attempted_at = self._clock.now()
            try:
                document = await self._source.fetch()
                keys = import_keys(document, algorithms=self._algorithms, source=self._source.name)
            except Unavailable as exc:
                self._failure = exc.message
                if force or self._keys is None:
                    raise
                log.warning("keeping the JWKS fetched earlier: %s", exc.message)
                return
            self._keys = keys
            self._fetched_at = self._attempted_at
            self._loads += 1
            self._failure = None

    def _refuse_within_cooldown(self, now: dt.datetime) -> None:
        """While the first fetch keeps failing, refuse at once until the cooldown has passed:
        otherwise every token would wait for a fetch of its own."""
        attempted = self._attempted_at
        if self._failure is not None and attempted is not None:
            retry_at = attempted + self._cooldown
            if now < retry_at:
                raise Unavailable(
                    f"no JWKS yet: {self._failure} (next attempt at {retry_at.isoformat()})"
                )

    def _due(self, now: dt.datetime) -> bool:
        """Old enough to refresh, and (while the source is failing) not tried too recently."""
        fetched, attempted = self._fetched_at, self._attempted_at
        old = fetched is None or now - fetched >= self._max_age
        return old and (attempted is None or now - attempted >= self._cooldown)

    def _may_refetch(self, now: dt.datetime) -> bool:
        """At most one refetch for unknown kids per cooldown."""
        return self._refetched_at is None or now - self._refetched_at >= self._cooldown
