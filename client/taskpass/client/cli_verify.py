"""`taskpass verify`: check a credential as a relying party would, with the CredentialVerifier.

    taskpass verify TOKEN --jwks-url http://localhost:8080/.well-known/jwks.json \\
        --issuer http://localhost:8080 --audience payments-api --peer-cert caller.pem

Keys come from `--jwks-url`, or over gRPC (GetJwks) with the usual connection arguments.
Exit codes: 0 valid, 6 refused (the reason code and what to do are printed), 2 bad usage or an
unreadable file, 1 the keys could not be fetched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from taskpass.client.cli import EXIT_BAD_REQUEST, EXIT_ERROR, EXIT_OK, connect
from taskpass.client.errors import InvalidRequest, TaskpassClientError
from taskpass.client.verifier import CredentialVerifier, InvalidToken, VerifiedCredential

EXIT_INVALID_TOKEN = 6


def _summary(credential: VerifiedCredential) -> dict[str, Any]:
    return {
        "valid": True,
        "subject": credential.subject,
        "client_id": credential.client_id,
        "audience": list(credential.audience),
        "scopes": list(credential.scopes),
        "jti": credential.jti,
        "task_id": credential.task_id,
        "task": dict(credential.task),
        "issued_at": credential.issued_at.isoformat(),
        "expires_at": credential.expires_at.isoformat(),
        "kid": credential.kid,
        "bound_to": credential.bound_to,
    }


def _print(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, sort_keys=True))
        return
    for key, value in summary.items():
        shown = " ".join(value) if isinstance(value, list) else value
        print(f"{key}: {json.dumps(shown) if isinstance(shown, dict) else shown}")


async def _verify(args: argparse.Namespace, token: str, peer: bytes | None) -> VerifiedCredential:
    options: dict[str, Any] = {
        "issuer": args.issuer,
        "audience": args.audience,
        "require_binding": not args.allow_bearer,
    }
    if args.jwks_url:
        verifier = CredentialVerifier.from_jwks_url(args.jwks_url, **options)
        return await verifier.verify(token, peer_certificate=peer)
    async with connect(args) as client:
        verifier = CredentialVerifier.from_client(client, **options)
        return await verifier.verify(token, peer_certificate=peer)


def _run(args: argparse.Namespace) -> int:
    try:
        token = sys.stdin.read().strip() if args.token == "-" else args.token
        peer = args.peer_cert.read_bytes() if args.peer_cert is not None else None
        if not args.jwks_url and args.ca is None:
            raise InvalidRequest("give --jwks-url, or --ca (and --cert/--key) to use GetJwks")
        credential = asyncio.run(_verify(args, token, peer))
    except InvalidToken as error:
        if args.json:
            print(
                json.dumps({"valid": False, "reason": error.reason.value, "message": error.message})
            )
        print(f"taskpass: token refused ({error.reason.value}): {error.message}", file=sys.stderr)
        return EXIT_INVALID_TOKEN
    except InvalidRequest as error:
        print(f"taskpass: {error.message}", file=sys.stderr)
        return EXIT_BAD_REQUEST
    except TaskpassClientError as error:
        print(f"taskpass: {error.message}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:
        print(f"taskpass: {error}", file=sys.stderr)
        return EXIT_BAD_REQUEST
    _print(_summary(credential), args.json)
    return EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ve = commands.add_parser(
        "verify",
        help="verify a credential as a relying party does (signature, claims, binding)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ve.add_argument("token", help="the token, or - to read it from stdin")
    ve.add_argument("--issuer", required=True, help="the iss the token must carry")
    ve.add_argument(
        "--audience", required=True, action="append", help="this relying party's audience"
    )
    ve.add_argument(
        "--peer-cert",
        type=Path,
        help="the certificate (PEM or DER) the caller presented: checked against cnf.x5t#S256",
    )
    ve.add_argument(
        "--allow-bearer", action="store_true", help="accept tokens not bound to a certificate"
    )
    ve.add_argument("--json", action="store_true", help="print one JSON object")
    keys = ve.add_argument_group("keys: a JWKS URL, or GetJwks over gRPC")
    keys.add_argument("--jwks-url", help="e.g. http://localhost:8080/.well-known/jwks.json")
    keys.add_argument("--server", default="localhost:8443", help="host:port (default %(default)s)")
    keys.add_argument("--ca", type=Path, help="CA bundle that signed the server")
    keys.add_argument("--cert", type=Path, help="your X.509-SVID (PEM) for mTLS")
    keys.add_argument("--key", type=Path, help="its private key (PEM)")
    keys.add_argument("--server-name", help="override the TLS name checked on the server cert")
    keys.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    ve.set_defaults(func=_run, jwt_svid=None)
