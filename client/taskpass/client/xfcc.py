"""The caller's certificate from Envoy's `x-forwarded-client-cert` header (XFCC), for a relying
party behind an Envoy that terminates the caller's mTLS.

    peer = peer_certificate(request.headers["x-forwarded-client-cert"])
    credential = await verifier.verify(token, peer_certificate=peer)

Envoy must be told to send the certificate (`set_current_client_cert_details: {cert: true}`) and
to replace whatever XFCC the caller sent (`forward_client_cert_details: SANITIZE_SET`): trust
this header only from your own proxy. The format is comma-separated elements (one per proxy hop,
the last one nearest to us), each `Key=value` pairs separated by `;`, values optionally quoted
(a `"` inside a quoted value is escaped as `\\"`, e.g. in a certificate's Subject); `Cert` holds
the URL-encoded PEM of the client certificate.
"""

from __future__ import annotations

from urllib.parse import unquote

from taskpass.client.errors import InvalidRequest

MAX_HEADER_BYTES = 64 * 1024


def _malformed(what: str) -> InvalidRequest:
    return InvalidRequest(
        f"x-forwarded-client-cert: {what}; the header must come from your own Envoy "
        "(forward_client_cert_details: SANITIZE_SET)"
    )


def _split(text: str, separator: str) -> list[str]:
    """Split on `separator` outside double quotes; a backslash inside quotes escapes the next
    character (kept as is: `_value` undoes it), so an escaped quote does not end the value."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted:  # also a backslash at the very end of a quoted value
        raise _malformed("a quoted value is not closed")
    parts.append("".join(current))
    return parts


def _value(raw: str) -> str:
    """A value as written: unquoted as is, or quoted, without its quotes and escapes."""
    if not raw.startswith('"'):
        if '"' in raw:
            raise _malformed("a quote inside an unquoted value")
        return raw
    chars: list[str] = []
    escaped = False
    for index, char in enumerate(raw[1:], start=1):
        if escaped:
            chars.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            if index != len(raw) - 1:
                raise _malformed("text after a quoted value")
            return "".join(chars)
        else:
            chars.append(char)
    raise _malformed("a quoted value is not closed")


def elements(header: str) -> list[dict[str, str]]:
    """Every element of an XFCC header, as {key: unquoted, unescaped, URL-decoded value}."""
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
            pairs[key.strip().lower()] = unquote(_value(value.strip()))
        parsed.append(pairs)
    return parsed


def peer_certificate(header: str | None) -> str | None:
    """The PEM certificate of the nearest hop's client, or None when the header carries none."""
    if not header:
        return None
    nearest = elements(header)[-1]
    return nearest.get("cert") or None
