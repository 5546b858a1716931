"""`taskpass policy check|test`: the security team's review workflow for policy documents."""

from __future__ import annotations

import argparse
from pathlib import Path

from taskpass.server.policy.engine import PolicyEngine
from taskpass.server.policy.testing import run_policy_cases


def _check(args: argparse.Namespace) -> int:
    engine = PolicyEngine.from_file(args.file)
    print(f"{args.file}: ok, version {engine.version}")
    return 0


def _test(args: argparse.Namespace) -> int:
    engine = PolicyEngine.from_file(args.file)
    results = run_policy_cases(engine, args.cases)
    failed = [r for r in results if not r.passed]
    for result in results:
        print(("PASS " if result.passed else "FAIL ") + result.name)
        for difference in result.differences:
            print(f"    {difference}")
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("policy", help="check and test policy documents")
    sub = p.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND")
    check = sub.add_parser("check", help="load and type-check a policy document")
    check.add_argument("file", type=Path)
    check.set_defaults(func=_check)
    test = sub.add_parser("test", help="run a file of cases with expected decisions")
    test.add_argument("file", type=Path)
    test.add_argument("--cases", type=Path, required=True)
    test.set_defaults(func=_test)
