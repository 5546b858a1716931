"""`taskpass audit verify|export` and `taskpass policy load|show`: the security team's CLI.

Connect with an admin or auditor SVID (--cert/--key). `audit verify` exits 0 when the chain
holds and 6 when a record was edited, deleted, inserted or reordered (the message names the
first one). `audit export` writes JSON lines, one record each, oldest first.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from taskpass.client.admin import AdminClient, PolicyInfo
from taskpass.client.cli import (
    EXIT_BAD_REQUEST,
    EXIT_OK,
    add_connection_arguments,
    run_client_command,
)
from taskpass.client.client import TaskpassClient
from taskpass.client.errors import InvalidRequest

EXIT_TAMPERED = 6
SIGNATURE_SUFFIX = ".sig"


def _head(text: str) -> tuple[int, str]:
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or not digest:
        raise argparse.ArgumentTypeError("give SEQ:HASH, e.g. 42:3f5a... as `audit verify` prints")
    return int(seq), digest


def _verify(args: argparse.Namespace) -> int:
    async def body(client: TaskpassClient) -> int:
        result = await AdminClient.over(client).verify_audit(args.expect)
        if args.json:
            print(
                json.dumps(
                    {
                        "ok": result.ok,
                        "checked": result.checked,
                        "last_seq": result.last_seq,
                        "last_hash": result.last_hash,
                        "problem": result.problem or None,
                        "bad_seq": result.bad_seq or None,
                        "message": result.message or None,
                    },
                    sort_keys=True,
                )
            )
        elif result.ok:
            print(
                f"audit log ok: {result.checked} records chained, "
                f"head {result.last_seq}:{result.last_hash} (keep it: a later "
                "`audit verify --expect` with it finds records rewritten or cut off since)"
            )
        else:
            print(
                f"AUDIT LOG TAMPERED: {result.message} "
                f"({result.problem} at record {result.bad_seq}; "
                f"{result.checked} records before it are intact)"
            )
        return EXIT_OK if result.ok else EXIT_TAMPERED

    return run_client_command(args, body)


def _since(value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError("an ISO 8601 time, e.g. 2026-06-01T12:00:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _export(args: argparse.Namespace) -> int:
    async def body(client: TaskpassClient) -> int:
        admin = AdminClient.over(client)
        async for record in admin.export_audit(after_seq=args.after_seq, since=args.since):
            print(json.dumps(record.as_json(), sort_keys=True), flush=True)
        return EXIT_OK

    return run_client_command(args, body)


def _print_policy(info: PolicyInfo, previous: str | None, as_json: bool) -> None:
    data = info.as_json()
    if previous is not None:
        data["previous_version"] = previous
    if as_json:
        print(json.dumps(data, sort_keys=True))
        return
    for key, value in data.items():
        print(f"{key}: {'none' if value is None else value}")


def _load(args: argparse.Namespace) -> int:
    signature_file: Path = args.signature or Path(f"{args.file}{SIGNATURE_SUFFIX}")
    try:
        document = args.file.read_bytes()
        signature = signature_file.read_bytes() if signature_file.exists() else None
    except OSError as exc:
        print(f"taskpass: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_REQUEST

    async def body(client: TaskpassClient) -> int:
        if signature is None and args.signature is not None:
            raise InvalidRequest(f"signature file {signature_file} does not exist")
        info, previous = await AdminClient.over(client).load_policy(document, signature)
        _print_policy(info, previous, args.json)
        return EXIT_OK

    return run_client_command(args, body)


def _show(args: argparse.Namespace) -> int:
    async def body(client: TaskpassClient) -> int:
        info, document = await AdminClient.over(client).get_policy()
        if args.document:
            print(document.decode(), end="")
        else:
            _print_policy(info, None, args.json)
        return EXIT_OK

    return run_client_command(args, body)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("audit", help="verify and export the hash-chained audit log")
    sub = p.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    verify = sub.add_parser(
        "verify", help="check the whole chain; exit 6 naming the first tampered record"
    )
    add_connection_arguments(verify)
    verify.add_argument("--json", action="store_true")
    verify.add_argument(
        "--expect",
        type=_head,
        metavar="SEQ:HASH",
        help="a head kept from an earlier check or the server's log ('audit head SEQ:HASH'): "
        "the log must still hold that record with that hash",
    )
    verify.set_defaults(func=_verify)
    export = sub.add_parser("export", help="audit records as JSON lines, oldest first")
    add_connection_arguments(export)
    export.add_argument("--since", type=_since, help="only records at or after this time")
    export.add_argument("--after-seq", type=int, default=0, help="only records after this seq")
    export.set_defaults(func=_export)


def register_policy_commands(
    policy_commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """`policy load` and `policy show`, beside the offline `policy check|test|sign|verify`."""
    load = policy_commands.add_parser(
        "load", help="load a signed policy into the running server (admins)"
    )
    add_connection_arguments(load)
    load.add_argument("file", type=Path)
    load.add_argument(
        "--signature", type=Path, help=f"the detached signature (default FILE{SIGNATURE_SUFFIX})"
    )
    load.add_argument("--json", action="store_true")
    load.set_defaults(func=_load)
    show = policy_commands.add_parser("show", help="the policy in force on the server (admins)")
    add_connection_arguments(show)
    show.add_argument("--json", action="store_true")
    show.add_argument("--document", action="store_true", help="print the document itself")
    show.set_defaults(func=_show)


def _rotate(args: argparse.Namespace) -> int:
    async def body(client: TaskpassClient) -> int:
        upcoming = await AdminClient.over(client).rotate_signing_key()
        print(json.dumps(upcoming.as_json(), sort_keys=True))
        return EXIT_OK

    return run_client_command(args, body)


def _keys(args: argparse.Namespace) -> int:
    async def body(client: TaskpassClient) -> int:
        for key in await AdminClient.over(client).list_signing_keys():
            print(json.dumps(key.as_json(), sort_keys=True))
        return EXIT_OK

    return run_client_command(args, body)


def register_key_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("keys", help="the server's signing keys and their rotation (admins)")
    sub = p.add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")
    rotate = sub.add_parser(
        "rotate",
        help="publish a new signing key now; it signs after the grace period, and the old one "
        "stays published until its last token expires",
    )
    add_connection_arguments(rotate)
    rotate.set_defaults(func=_rotate)
    listing = sub.add_parser("list", help="next, active and retired keys as JSON lines")
    add_connection_arguments(listing)
    listing.set_defaults(func=_keys)
