"""Revocation commands of the `taskpass` CLI: watch, revoke, ban, unban, bans.

`watch` prints one JSON object per verified revocation on stdout (JSON lines), flushed at once,
and keeps going across reconnects; `--since` resumes after a seq printed earlier. Exit codes are
those of taskpass.client.cli.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping

from taskpass.client.cli import EXIT_BAD_REQUEST, EXIT_OK, add_connection_arguments
from taskpass.client.cli import run_client_command as run
from taskpass.client.client import TaskpassClient
from taskpass.client.revocations import RevocationAdmin
from taskpass.client.watcher import WATCHER_LOGGER, RevocationWatcher


def _emit(value: Mapping[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(value, sort_keys=True), flush=True)
        return
    for key, item in value.items():
        shown = " ".join(str(i) for i in item) if isinstance(item, list) else item
        print(f"{key}: {shown}")


def _show_reconnects() -> None:
    """The watcher's reconnects on stderr: a stream that keeps failing is not silent."""
    watcher_log = logging.getLogger(WATCHER_LOGGER)
    if not watcher_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("taskpass: %(message)s"))
        watcher_log.addHandler(handler)
        watcher_log.setLevel(logging.INFO)
        watcher_log.propagate = False


def _watch(args: argparse.Namespace) -> int:
    async def body(client: TaskpassClient) -> int:
        # One call first: an unreachable server or a refused handshake ends the command here
        # (exit 1, saying why) instead of in silent retries; later losses are reconnected.
        await client.jwks()
        _show_reconnects()
        watcher = RevocationWatcher(client, since=args.since, issuer=args.issuer)
        printed = 0
        async for revocation in watcher:
            _emit(revocation.as_json(), True)
            printed += 1
            if args.max_events is not None and printed >= args.max_events:
                break
        return EXIT_OK

    return run(args, body)


def _revoke(args: argparse.Namespace) -> int:
    if args.requester and args.task_id is None:
        print("taskpass: --requester goes with --task-id", file=sys.stderr)
        return EXIT_BAD_REQUEST

    async def body(client: TaskpassClient) -> int:
        admin = RevocationAdmin(client)
        if args.jti is not None:
            result = await admin.revoke_credential(args.jti, reason=args.reason)
        elif args.task_id is not None:
            result = await admin.revoke_task(
                args.task_id, requester=args.requester, reason=args.reason
            )
        else:
            result = await admin.ban(args.spiffe_id, reason=args.reason)
        _emit(result.as_json(), args.json)
        return EXIT_OK

    return run(args, body)


def _ban(args: argparse.Namespace) -> int:
    async def body(client: TaskpassClient) -> int:
        result = await RevocationAdmin(client).ban(args.spiffe_id, reason=args.reason)
        _emit(result.as_json(), args.json)
        return EXIT_OK

    return run(args, body)


def _unban(args: argparse.Namespace) -> int:
    async def body(client: TaskpassClient) -> int:
        lifted = await RevocationAdmin(client).unban(args.spiffe_id, reason=args.reason)
        _emit(lifted.as_json(), args.json)
        return EXIT_OK

    return run(args, body)


def _bans(args: argparse.Namespace) -> int:
    async def body(client: TaskpassClient) -> int:
        for ban in await RevocationAdmin(client).list_bans():
            _emit(ban.as_json(), True)
        return EXIT_OK

    return run(args, body)


def _since(value: str) -> int:
    seq = int(value)
    if seq < 0:
        raise argparse.ArgumentTypeError("a sequence number is not negative")
    return seq


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    wa = commands.add_parser(
        "watch", help="follow the revocation stream: one JSON line per verified revocation"
    )
    add_connection_arguments(wa)
    wa.add_argument(
        "--since", type=_since, help="resume after this seq (default: snapshot of what is in force)"
    )
    wa.add_argument("--issuer", help="the iss every revocation SET must carry")
    wa.add_argument("--max-events", type=int, help="exit after printing this many revocations")
    wa.set_defaults(func=_watch)

    re = commands.add_parser("revoke", help="revoke a credential, a task, or an identity (ban)")
    add_connection_arguments(re)
    target = re.add_mutually_exclusive_group(required=True)
    target.add_argument("--jti", help="one credential (write --jti=ID when the id starts with -)")
    target.add_argument("--task-id", help="every credential of a task (the task ends)")
    target.add_argument(
        "--spiffe-id",
        help="an identity, exact or a pattern (.../* or .../**): banned until `taskpass unban`",
    )
    re.add_argument("--requester", default="", help="with --task-id: who ran it (default: you)")
    re.add_argument("--reason", default="")
    re.add_argument("--json", action="store_true")
    re.set_defaults(func=_revoke)

    ba = commands.add_parser(
        "ban", help="revoke everything an identity holds and refuse its exchanges until unban"
    )
    add_connection_arguments(ba)
    ba.add_argument("--spiffe-id", required=True, help="an exact ID or a pattern (.../*, .../**)")
    ba.add_argument("--reason", default="")
    ba.add_argument("--json", action="store_true")
    ba.set_defaults(func=_ban)

    un = commands.add_parser("unban", help="lift a ban (what it revoked stays revoked)")
    add_connection_arguments(un)
    un.add_argument("--spiffe-id", required=True, help="exactly as banned")
    un.add_argument("--reason", default="")
    un.add_argument("--json", action="store_true")
    un.set_defaults(func=_unban)

    bs = commands.add_parser("bans", help="list the bans in force (JSON lines)")
    add_connection_arguments(bs)
    bs.set_defaults(func=_bans)
