"""SPIFFE IDs as a value object: rules ID-1..ID-4 hold for every `SpiffeId` that exists.

py-spiffe's `SpiffeId` lower-cases an upper-case trust domain and has no length limits, so it
would accept what ID-2 and ID-4 reject; this module applies the SPIFFE ID spec exactly instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SCHEME = "spiffe://"
MAX_TRUST_DOMAIN_BYTES = 255
MAX_ID_BYTES = 2048

_TRUST_DOMAIN_CHARS = re.compile(r"[a-z0-9._-]+")
_SEGMENT_CHARS = re.compile(r"[a-zA-Z0-9._-]+")


class InvalidSpiffeId(ValueError):
    """A string is not a valid SPIFFE ID. `rule` is the DESIGN.md rule it broke (ID-1..ID-4).

    Callers turn this into the error of their layer: AttestationFailed (X-2, J-6) for a peer's
    identity, ConfigError for a configured one.
    """

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(f"[{rule}] {reason}")
        self.rule = rule
        self.reason = reason


def shown(value: str, limit: int = 80) -> str:
    """A bounded, quoted rendering of untrusted input for an error message."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def validate_trust_domain(name: str) -> str:
    """Return `name` if it is a valid trust domain name (ID-2), else raise InvalidSpiffeId."""
    if not name:
        raise InvalidSpiffeId("ID-2", "the trust domain is empty")
    if len(name.encode()) > MAX_TRUST_DOMAIN_BYTES:
        raise InvalidSpiffeId(
            "ID-2", f"the trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes"
        )
    if _TRUST_DOMAIN_CHARS.fullmatch(name) is None:
        if name.lower() != name and _TRUST_DOMAIN_CHARS.fullmatch(name.lower()):
            problem = "has upper-case letters; a trust domain must be lower case"
        else:
            problem = "may contain only a-z, 0-9, '.', '-' and '_'"
        raise InvalidSpiffeId("ID-2", f"trust domain {shown(name)} {problem}")
    return name


def _validate_path(path: str) -> None:
    """ID-3. `path` is '' (the trust domain's own ID) or starts with '/'."""
    if not path:
        return
    if path.endswith("/"):
        raise InvalidSpiffeId("ID-3", "the path has a trailing '/'; remove it")
    for segment in path[1:].split("/"):
        if not segment:
            raise InvalidSpiffeId("ID-3", "the path has an empty segment ('//')")
        if segment in (".", ".."):
            raise InvalidSpiffeId("ID-3", f"the path has a {segment!r} segment")
        if "%" in segment:
            raise InvalidSpiffeId("ID-3", "the path is percent-encoded; SPIFFE IDs never are")
        if _SEGMENT_CHARS.fullmatch(segment) is None:
            raise InvalidSpiffeId(
                "ID-3",
                f"path segment {shown(segment)} may contain only a-z, A-Z, 0-9, '.', '-' and '_'",
            )


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A valid SPIFFE ID: `spiffe://<trust_domain><path>`; `path` is '' or starts with '/'.

    The constructor validates, so an invalid SPIFFE ID cannot exist. Use `parse_spiffe_id` for
    strings.
    """

    trust_domain: str
    path: str = ""

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        if self.path and not self.path.startswith("/"):
            raise InvalidSpiffeId("ID-3", "the path must start with '/'")
        _validate_path(self.path)
        if len(_SCHEME) + len(self.trust_domain.encode()) + len(self.path.encode()) > MAX_ID_BYTES:
            raise InvalidSpiffeId("ID-4", f"the ID is longer than {MAX_ID_BYTES} bytes")

    def __str__(self) -> str:
        return f"{_SCHEME}{self.trust_domain}{self.path}"

    @property
    def is_root(self) -> bool:
        """True for the trust domain's own ID (no path), which names no workload."""
        return not self.path

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path[1:].split("/")) if self.path else ()


def parse_spiffe_id(value: str) -> SpiffeId:
    """Parse and validate a SPIFFE ID string (ID-1..ID-4); raise InvalidSpiffeId naming the rule."""
    # ID-4 first: a bound on the work done for hostile input.
    if len(value.encode()) > MAX_ID_BYTES:
        raise InvalidSpiffeId("ID-4", f"the ID is longer than {MAX_ID_BYTES} bytes")
    if not value.startswith(_SCHEME):
        raise InvalidSpiffeId("ID-1", f"{shown(value)} does not start with 'spiffe://'")
    if "?" in value or "#" in value:
        raise InvalidSpiffeId("ID-1", "a SPIFFE ID has no query ('?') or fragment ('#')")
    rest = value[len(_SCHEME) :]
    slash = rest.find("/")
    authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if "@" in authority:
        raise InvalidSpiffeId("ID-1", "a SPIFFE ID has no userinfo ('user@')")
    if ":" in authority:
        raise InvalidSpiffeId("ID-1", "a SPIFFE ID has no port (':port')")
    if "%" in authority:
        raise InvalidSpiffeId("ID-2", "the trust domain is percent-encoded; SPIFFE IDs never are")
    return SpiffeId(authority, path)
