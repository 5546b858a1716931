"""The JOSE checks both of the SDK's verifiers make before they read claims: credentials
(verifier.py) and revocation SETs (security_events.py).

`JwsChecks.open(token)` checks, in order: a compact JWS of 1..max_bytes characters; its `typ` is
one of `types` (in any case); its `alg` is on the allow-list; its `kid` names a published key (an
unknown one makes the key cache refetch once, within its cooldown); the signature; a payload that
is a JSON object. Each failure is the caller's own error, built by its `refuse` from a `Refusal`
(values that verifier.Reason and security_events.RejectReason share) and the caller's `Words`.
With `confirm_unknown_kids`, a kid is refused as unknown only once freshly fetched keys lack it
too; until they can be fetched it is Unavailable (see JwksCache.key).

With `cache_size`, the last tokens that passed are remembered (least recently used out): a
relying party sees the same credential on every call its holder makes, and the signature check
is most of a verification's cost. A remembered token passes again only while its kid still
resolves to the very key object that verified it (the key cache makes new objects on every
fetch, so any refresh, rotation or removal sends it through every check again); the checks
after these (claims and expiry, binding, revocation) are the callers' and run on every call.

JOSE parsing and signature checks are joserfc's.
"""

from __future__ import annotations

import collections
import copy
import enum
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Final

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import Key

from taskpass.client.errors import InvalidRequest
from taskpass.client.jwks import KEY_TYPES, JwksCache

ALGORITHMS: Final = ("ES256", "EdDSA")
"""The default allow-list."""


def allowed_algorithms(algorithms: Collection[str]) -> tuple[str, ...]:
    """A verifier's allow-list, refused at construction when empty or naming an algorithm the
    key cache cannot hold keys for (rather than failing on the first token)."""
    unknown = set(algorithms) - set(KEY_TYPES)
    if unknown or not algorithms:
        raise InvalidRequest(
            f"algorithms: choose from {', '.join(KEY_TYPES)} (got {sorted(algorithms)})"
        )
    return tuple(algorithms)


class Refusal(enum.StrEnum):
    MALFORMED = "malformed"
    WRONG_TYPE = "wrong_type"
    ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"


@dataclass(frozen=True, slots=True, kw_only=True)
class Words:
    """How the caller says each refusal. `it` names what is checked ("the token") in the
    messages the verifiers word alike; the others are whole messages."""

    it: str
    size: str
    wrong_type: str
    not_allowed: str
    unknown_key: Callable[[str], str]
    """The message for a kid no published key has."""


def _without_warning(alg: JWSAlgModel) -> JWSAlgModel:
    quiet = copy.copy(alg)
    quiet.security_warning = None
    return quiet


class _Registry(jws.JWSRegistry):
    # joserfc warns on every EdDSA verification (RFC 9864 prefers the fully specified "Ed25519").
    # Accepting EdDSA is a deliberate choice of the allow-list here, so the warning is noise; a
    # copy of the model without it keeps the global warning filters (not thread-safe) untouched.
    algorithms: dict[str, JWSAlgModel] = {
        name: _without_warning(alg) if name == "EdDSA" else alg
        for name, alg in jws.JWSRegistry.algorithms.items()
    }


@dataclass(frozen=True, slots=True)
class _Passed:
    """A token that passed every check: the key that verified it, its header and payload."""

    key: Key
    header: dict[str, Any]
    payload: bytes


class JwsChecks:
    """The checks above for one kind of token: its `typ` values, size limit and wording."""

    def __init__(
        self,
        keys: JwksCache,
        *,
        algorithms: Collection[str],
        types: Collection[str],
        max_bytes: int,
        words: Words,
        refuse: Callable[[Refusal, str], Exception],
        cache_size: int = 0,
        confirm_unknown_kids: bool = False,
    ) -> None:
        self._keys = keys
        self._algorithms = tuple(algorithms)
        self._types = frozenset(types)
        self._max_bytes = max_bytes
        self._words = words
        self._refuse = refuse
        self._registry = _Registry(algorithms=self._algorithms, strict_check_header=False)
        self._cache_size = cache_size
        self._confirm = confirm_unknown_kids
        self._passed: collections.OrderedDict[str, _Passed] = collections.OrderedDict()

    async def open(self, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The header and the payload of `token` once every check has passed; the caller's
        error for the first that fails. The key cache's errors (Unavailable) pass through.
        Each call returns its own dicts: callers may keep or change them."""
        passed = self._passed.get(token) if self._cache_size and isinstance(token, str) else None
        if passed is not None:
            # (The key lookup may wait for a fetch, while other calls change the cache.)
            if (
                await self._keys.key(passed.header["kid"], confirm_unknown=self._confirm)
                is passed.key
            ):
                if token in self._passed:
                    self._passed.move_to_end(token)
                return dict(passed.header), self._payload(passed.payload)
            self._passed.pop(token, None)  # the keys changed since: check everything again
        signed = self._parse(token)
        header = signed.headers()
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise self._refuse(Refusal.MALFORMED, f"{self._words.it} has no kid header")
        key = await self._keys.key(kid, confirm_unknown=self._confirm)
        if key is None:
            raise self._refuse(Refusal.UNKNOWN_KEY, self._words.unknown_key(kid))
        try:
            valid = jws.validate_compact(signed, key, registry=self._registry)
        except JoseError as exc:
            # e.g. an ES256 header naming an Ed25519 key: the key does not fit the algorithm
            raise self._refuse(
                Refusal.BAD_SIGNATURE, f"the key does not fit {self._words.it}'s alg"
            ) from exc
        if not valid:
            raise self._refuse(
                Refusal.BAD_SIGNATURE, f"{self._words.it}'s signature does not verify"
            )
        payload = self._payload(signed.payload)
        if self._cache_size:
            self._passed[token] = _Passed(key=key, header=dict(header), payload=signed.payload)
            if len(self._passed) > self._cache_size:
                self._passed.popitem(last=False)
        return header, payload

    def _parse(self, token: str) -> jws.CompactSignature:
        if not isinstance(token, str) or not token or len(token) > self._max_bytes:
            raise self._refuse(Refusal.MALFORMED, self._words.size)
        try:
            signed = jws.extract_compact(token.encode("ascii"), registry=self._registry)
        except (JoseError, ValueError, TypeError, UnicodeEncodeError) as exc:
            raise self._refuse(Refusal.MALFORMED, f"{self._words.it} is not a compact JWS") from exc
        header = signed.headers()
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in self._types:
            raise self._refuse(Refusal.WRONG_TYPE, self._words.wrong_type)
        if header.get("alg") not in self._algorithms:
            raise self._refuse(Refusal.ALGORITHM_NOT_ALLOWED, self._words.not_allowed)
        return signed

    def _payload(self, raw: bytes) -> dict[str, Any]:
        try:
            payload = json.loads(raw)
        except (ValueError, TypeError) as exc:
            raise self._refuse(
                Refusal.MALFORMED, f"{self._words.it}'s payload is not JSON"
            ) from exc
        if not isinstance(payload, dict):
            raise self._refuse(
                Refusal.MALFORMED, f"{self._words.it}'s payload is not a JSON object"
            )
        return payload
