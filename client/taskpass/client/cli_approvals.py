"""`taskpass approvals watch|list|get|approve|deny`: the approver's side of the CLI.

Connect with the approver's own SVID (--cert/--key). Exit codes as for the other client
commands (cli.py): 3 when you may not decide that approval, 1 when it is no longer pending.
"""

from __future__ import annotations

import argparse
import json

from taskpass.client.approvals import Approval, ApprovalsClient
from taskpass.client.cli import EXIT_OK, add_connection_arguments, run_client_command
from taskpass.client.client import TaskpassClient


def summary(approval: Approval) -> str:
    """One line an approver can decide from."""
    t = approval.task
    where = f" in {t.environment}" if t.environment else ""
    tool = f" with {t.tool}" if t.tool else ""
    why = f' because "{t.reason}"' if t.reason else ""
    decided = f" by {approval.decided_by}" if approval.decided_by else ""
    parent = f" under parent credential {approval.parent_jti}" if approval.parent_jti else ""
    return (
        f"[{approval.state}{decided}] {approval.approval_id}: {approval.requester} "
        f"({approval.attestation_method}){parent} asks to {t.action} {t.audience}{where}{tool} "
        f"({t.sensitivity}, task {t.task_id}, ttl {approval.ttl_seconds}s, "
        f"scopes {' '.join(approval.scopes) or 'none'}){why}; rule(s) {', '.join(approval.rules)}"
        f"; approvers {', '.join(approval.approver_groups)}; "
        f"expires {approval.expires_at.isoformat()}"
    )


def _show(approval: Approval, as_json: bool) -> None:
    if as_json:
        print(json.dumps(approval.as_json(), sort_keys=True), flush=True)
    else:
        print(summary(approval), flush=True)


def _watch(args: argparse.Namespace) -> int:
    async def body(client: TaskpassClient) -> int:
        shown = 0
        async for approval in ApprovalsClient.over(client).watch():
            _show(approval, args.json)
            shown += 1
            if args.count is not None and shown >= args.count:
                break
        return EXIT_OK

    return run_client_command(args, body)


def _list(args: argparse.Namespace) -> int:
    async def body(client: TaskpassClient) -> int:
        for approval in await ApprovalsClient.over(client).list_pending():
            _show(approval, args.json)
        return EXIT_OK

    return run_client_command(args, body)


def _get(args: argparse.Namespace) -> int:
    async def body(client: TaskpassClient) -> int:
        _show(await ApprovalsClient.over(client).get(args.approval_id), args.json)
        return EXIT_OK

    return run_client_command(args, body)


def _approve(args: argparse.Namespace) -> int:
    async def body(client: TaskpassClient) -> int:
        approvals = ApprovalsClient.over(client)
        _show(await approvals.approve(args.approval_id, comment=args.comment), args.json)
        return EXIT_OK

    return run_client_command(args, body)


def _deny(args: argparse.Namespace) -> int:
    async def body(client: TaskpassClient) -> int:
        approvals = ApprovalsClient.over(client)
        _show(await approvals.deny(args.approval_id, reason=args.reason), args.json)
        return EXIT_OK

    return run_client_command(args, body)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("approvals", help="see pending approval requests live; decide them")
    sub = p.add_subparsers(dest="approvals_command", required=True, metavar="SUBCOMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text)
        add_connection_arguments(parser)
        parser.add_argument("--json", action="store_true", help="one JSON object per line")
        return parser

    watch = command("watch", "show pending requests you may decide, then each new one, live")
    watch.add_argument(
        "--count", type=_positive, help="exit after this many (default: until interrupted)"
    )
    watch.set_defaults(func=_watch)
    command("list", "the pending requests you may decide").set_defaults(func=_list)
    get = command("get", "one approval (yours, or one you may decide)")
    get.add_argument("approval_id", metavar="ID")
    get.set_defaults(func=_get)
    approve = command("approve", "approve a pending request (never your own)")
    approve.add_argument("approval_id", metavar="ID")
    approve.add_argument("--comment", default="", help="recorded in the audit log")
    approve.set_defaults(func=_approve)
    deny = command("deny", "deny a pending request: final for that task")
    deny.add_argument("approval_id", metavar="ID")
    deny.add_argument("--reason", required=True, help="what the requester is told")
    deny.set_defaults(func=_deny)
