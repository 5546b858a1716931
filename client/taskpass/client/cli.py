"""Client-side commands of the `taskpass` CLI: exchange, complete, introspect, jwks.

Exit codes: 0 success, 1 server unavailable or other error, 2 bad request or usage,
3 denied by policy (or permission), 4 attestation failed, 5 approval pending.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from taskpass.client.client import TaskpassClient
from taskpass.client.errors import (
    ApprovalPending,
    AttestationFailed,
    InvalidRequest,
    PermissionDenied,
    TaskpassClientError,
)
from taskpass.client.models import SENSITIVITIES, Task

MAX_WAIT_SECONDS = 3600

EXIT_OK, EXIT_ERROR, EXIT_BAD_REQUEST, EXIT_DENIED, EXIT_ATTESTATION, EXIT_PENDING = (
    0,
    1,
    2,
    3,
    4,
    5,
)


def _exit_code(error: TaskpassClientError) -> int:
    if isinstance(error, InvalidRequest):
        return EXIT_BAD_REQUEST
    if isinstance(error, PermissionDenied):
        return EXIT_DENIED
    if isinstance(error, AttestationFailed):
        return EXIT_ATTESTATION
    if isinstance(error, ApprovalPending):
        return EXIT_PENDING
    return EXIT_ERROR


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--server", default="localhost:8443", help="host:port (default %(default)s)")
    group.add_argument("--ca", type=Path, required=True, help="CA bundle that signed the server")
    group.add_argument("--cert", type=Path, help="your X.509-SVID (PEM) for mTLS")
    group.add_argument("--key", type=Path, help="its private key (PEM)")
    group.add_argument(
        "--jwt-svid",
        type=Path,
        help="a file holding a JWT-SVID, sent as a bearer over server TLS (instead of --cert)",
    )
    group.add_argument("--server-name", help="override the TLS name checked on the server cert")
    group.add_argument("--timeout", type=float, default=10.0, help="seconds per call")


def connect(args: argparse.Namespace) -> TaskpassClient:
    if args.jwt_svid is not None:
        token = args.jwt_svid.read_text().strip()
        return TaskpassClient.with_jwt_svid(
            args.server, ca=args.ca, token=token, server_name=args.server_name, timeout=args.timeout
        )
    if args.cert is None or args.key is None:
        raise InvalidRequest("give --cert and --key (mTLS with an X.509-SVID) or --jwt-svid FILE")
    return TaskpassClient.from_files(
        args.server,
        ca=args.ca,
        cert=args.cert,
        key=args.key,
        server_name=args.server_name,
        timeout=args.timeout,
    )


def run_client_command(
    args: argparse.Namespace, body: Callable[[TaskpassClient], Awaitable[int]]
) -> int:
    async def main() -> int:
        async with connect(args) as client:
            return await body(client)

    try:
        return asyncio.run(main())
    except TaskpassClientError as error:
        print(f"taskpass: {error.message}", file=sys.stderr)
        return _exit_code(error)
    except OSError as error:
        print(f"taskpass: {error}", file=sys.stderr)
        return EXIT_BAD_REQUEST


def _print(value: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(value, sort_keys=True))
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict):  # cnf, act: one line per member, e.g. cnf.x5t#S256
                for member, inner in item.items():
                    print(f"{key}.{member}: {inner}")
            else:
                print(f"{key}: {' '.join(item) if isinstance(item, list) else item}")
    else:
        print(value)


def _exchange(args: argparse.Namespace) -> int:
    try:
        attributes = dict(a.split("=", 1) for a in args.attribute)
    except ValueError:
        print("taskpass: --attribute takes KEY=VALUE", file=sys.stderr)
        return EXIT_BAD_REQUEST
    task = Task(
        task_id=args.task_id,
        audience=args.audience,
        action=args.action,
        sensitivity=args.sensitivity,
        ttl=dt.timedelta(seconds=args.ttl),
        tool=args.tool,
        environment=args.environment,
        deadline=args.deadline,
        reason=args.reason,
        attributes=attributes,
        orchestrator=args.orchestrator,
    )
    if args.scope and args.on_behalf_of is None:
        print("taskpass: --scope narrows a delegation: give --on-behalf-of too", file=sys.stderr)
        return EXIT_BAD_REQUEST
    try:
        parent = _parent_token(args.on_behalf_of)
    except OSError as error:
        print(f"taskpass: --on-behalf-of: {error}", file=sys.stderr)
        return EXIT_BAD_REQUEST
    scopes = tuple(args.scope)

    async def body(client: TaskpassClient) -> int:
        try:
            credential = await client.exchange(task, on_behalf_of=parent, scopes=scopes)
        except ApprovalPending as pending:
            # say which approval at once, then (if asked) wait on the same request
            if args.wait_approval is None or not pending.approval_id:
                _print_pending(pending, args.json)
                raise
            print(
                f"taskpass: approval {pending.approval_id} pending (from "
                f"{', '.join(pending.approver_groups)}): waiting up to {args.wait_approval}s",
                file=sys.stderr,
            )
            try:
                credential = await client.exchange(
                    task,
                    wait_for_approval=dt.timedelta(seconds=args.wait_approval),
                    on_behalf_of=parent,
                    scopes=scopes,
                )
            except ApprovalPending as still:
                _print_pending(still, args.json)
                raise
        if args.json:
            _print(credential.as_json(), True)
        elif args.token_only:
            print(credential.token)
        else:
            _print({**credential.as_json(), "token": credential.token}, False)
        return EXIT_OK

    return run_client_command(args, body)


def _parent_token(source: str | None) -> str | None:
    """The parent agent's token, from a file or from stdin for `-`."""
    if source is None:
        return None
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    return text.strip()


def _print_pending(pending: ApprovalPending, as_json: bool) -> None:
    """The approval id on stdout (a script waits on it or shows it to an approver)."""
    _print(
        {
            "approval_id": pending.approval_id,
            "decision_id": pending.decision_id,
            "rules": list(pending.rules),
            "approver_groups": list(pending.approver_groups),
        },
        as_json,
    )


def _wait_seconds(value: str) -> int:
    seconds = int(value)
    if not 1 <= seconds <= MAX_WAIT_SECONDS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_WAIT_SECONDS} seconds")
    return seconds


def _complete(args: argparse.Namespace) -> int:
    async def body(client: TaskpassClient) -> int:
        revoked = await client.complete_task(args.task_id, requester=args.requester)
        _print({"task_id": args.task_id, "revoked_jtis": list(revoked)}, args.json)
        return EXIT_OK

    return run_client_command(args, body)


def _introspect(args: argparse.Namespace) -> int:
    token = sys.stdin.read().strip() if args.token == "-" else args.token

    async def body(client: TaskpassClient) -> int:
        result = await client.introspect(token)
        _print({"active": result.active, **result.claims}, args.json)
        return EXIT_OK

    return run_client_command(args, body)


def _jwks(args: argparse.Namespace) -> int:
    async def body(client: TaskpassClient) -> int:
        print(json.dumps(await client.jwks(), indent=2))
        return EXIT_OK

    return run_client_command(args, body)


def _deadline(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ex = commands.add_parser("exchange", help="exchange your SVID and a task for a credential")
    add_connection_arguments(ex)
    ex.add_argument("--task-id", required=True)
    ex.add_argument("--audience", required=True)
    ex.add_argument("--action", required=True)
    ex.add_argument("--sensitivity", default="internal", choices=SENSITIVITIES)
    ex.add_argument("--ttl", type=int, default=600, help="requested lifetime in seconds")
    ex.add_argument("--tool", default="")
    ex.add_argument("--environment", default="")
    ex.add_argument("--deadline", type=_deadline, help="ISO 8601; the credential never outlives it")
    ex.add_argument("--reason", default="")
    ex.add_argument("--attribute", action="append", default=[], metavar="KEY=VALUE")
    ex.add_argument(
        "--orchestrator", default="", help="SPIFFE ID that may complete this task for you"
    )
    ex.add_argument(
        "--wait-approval",
        type=_wait_seconds,
        metavar="SECONDS",
        help="if an approval is required, print its id and wait up to SECONDS for an approver "
        "(without it: print the id and exit 5)",
    )
    ex.add_argument(
        "--on-behalf-of",
        metavar="TOKEN_FILE",
        help="delegation: a file (or - for stdin) holding the parent agent's token; you get your "
        "own credential for its task, never wider nor longer-lived (RFC 8693)",
    )
    ex.add_argument(
        "--scope",
        action="append",
        default=[],
        help="with --on-behalf-of: a scope of the parent's you need (repeat it; default: all)",
    )
    out = ex.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object")
    out.add_argument("--token-only", action="store_true", help="print the token alone")
    ex.set_defaults(func=_exchange)

    co = commands.add_parser("complete", help="complete a task: revoke all its credentials")
    add_connection_arguments(co)
    co.add_argument("--task-id", required=True)
    co.add_argument(
        "--requester", default="", help="complete this workload's task, as its orchestrator"
    )
    co.add_argument("--json", action="store_true")
    co.set_defaults(func=_complete)

    it = commands.add_parser("introspect", help="is this token active? (RFC 7662)")
    add_connection_arguments(it)
    it.add_argument("token", help="the token, or - to read it from stdin")
    it.add_argument("--json", action="store_true")
    it.set_defaults(func=_introspect)

    jw = commands.add_parser("jwks", help="print the server's JWKS (over gRPC)")
    add_connection_arguments(jw)
    jw.set_defaults(func=_jwks)
