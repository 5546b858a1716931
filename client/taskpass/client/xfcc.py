"""The caller's certificate from Envoy's `x-forwarded-client-cert` header (XFCC), for a relying
party behind an Envoy that terminates the caller's mTLS.

    peer = peer_certificate(request.headers["x-forwarded-client-cert"])
    credential = await verifier.verify(token, peer_certificate=peer)

Envoy must be told to send the certificate (`set_current_client_cert_details: {cert: true}`) and
to replace whatever XFCC the caller sent (`forward_client_cert_details: SANITIZE_SET`): trust
this header only from your own proxy. The format is comma-separated elements (one per proxy hop,
the last one nearest to us), each `Key=value` pairs separated by `;`, values optionally quoted;
`Cert` holds the URL-encoded PEM of the client certificate.
"""

from __future__ import annotations

from urllib.parse import unquote

from taskpass.client.errors import InvalidRequest

MAX_HEADER_BYTES = 64 * 1024


def _split(text: str, separator: str) -> list[str]:
    """Split on `separator` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise InvalidRequest("x-forwarded-client-cert: unbalanced quotes")
    parts.append("".join(current))
    return parts


def elements(header: str) -> list[dict[str, str]]:
    """Every element of an XFCC header, as {key: unquoted, URL-decoded value}."""
    if len(header) > MAX_HEADER_BYTES:
        raise InvalidRequest(f"x-forwarded-client-cert: longer than {MAX_HEADER_BYTES} bytes")
    parsed: list[dict[str, str]] = []
    for element in _split(header, ","):
        pairs: dict[str, str] = {}
        for pair in _split(element, ";"):
            if not pair.strip():
                continue
            key, sep, value = pair.partition("=")
            if not sep:
                raise InvalidRequest(f"x-forwarded-client-cert: {key.strip()!r} has no value")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            pairs[key.strip().lower()] = unquote(value)
        parsed.append(pairs)
    return parsed


def peer_certificate(header: str | None) -> str | None:
    """The PEM certificate of the nearest hop's client, or None when the header carries none."""
    if not header:
        return None
    nearest = elements(header)[-1]
    return nearest.get("cert") or None
