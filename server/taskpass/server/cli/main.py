"""The `taskpass` command: server-side commands here, client-side ones from taskpass.client.cli."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from taskpass.client import cli as client_cli
from taskpass.client import cli_admin, cli_approvals, cli_revocation, cli_verify
from taskpass.server.cli import certs, db, policy, serve
from taskpass.server.errors import TaskpassError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskpass",
        description="Workload-identity attestation: SVID in, task-scoped credential out.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.register(commands)
    certs.register(commands)
    policy.register(commands)
    db.register(commands)
    client_cli.register(commands)
    cli_revocation.register(commands)
    cli_approvals.register(commands)
    cli_admin.register(commands)
    cli_admin.register_key_commands(commands)
    cli_verify.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except TaskpassError as error:
        print(f"taskpass: {error.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`taskpass watch | head -3`): not worth a traceback. stdout goes
        # to /dev/null so that Python's own flush at exit does not fail on it again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
