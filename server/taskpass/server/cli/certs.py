"""`taskpass certs init|issue|jwt-svid`: the dev PKI (never for production trust)."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from taskpass.server.pki.devpki import init_dev_pki, issue_svid, mint_jwt_svid


def _init(args: argparse.Namespace) -> int:
    init_dev_pki(args.out, trust_domain=args.trust_domain)
    print(f"dev PKI for {args.trust_domain} written to {args.out} (see certs/README.md)")
    return 0


def _issue(args: argparse.Namespace) -> int:
    issue_svid(
        args.ca_dir,
        args.spiffe_id,
        args.out,
        ttl=dt.timedelta(hours=args.ttl_hours),
        dns_names=tuple(args.dns),
    )
    print(f"wrote {args.out}.pem and {args.out}.key")
    return 0


def _jwt_svid(args: argparse.Namespace) -> int:
    token = mint_jwt_svid(
        args.signer,
        spiffe_id=args.spiffe_id,
        audience=list(args.audience),
        ttl=dt.timedelta(seconds=args.ttl),
    )
    if args.out:
        args.out.write_text(token + "\n")
        args.out.chmod(0o600)
    else:
        print(token)
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("certs", help="generate a dev PKI and mint SVIDs for testing")
    sub = p.add_subparsers(dest="certs_command", required=True, metavar="SUBCOMMAND")
    init = sub.add_parser("init", help="CA, server SVID, demo SVIDs and a JWT-SVID signer")
    init.add_argument("--trust-domain", default="example.org")
    init.add_argument("--out", type=Path, default=Path("certs/dev"))
    init.set_defaults(func=_init)

    issue = sub.add_parser("issue", help="mint an X.509-SVID for any SPIFFE ID")
    issue.add_argument("--spiffe-id", required=True)
    issue.add_argument("--out", type=Path, required=True, help="path prefix: writes .pem and .key")
    issue.add_argument("--ca-dir", type=Path, default=Path("certs/dev"))
    issue.add_argument("--ttl-hours", type=float, default=24.0)
    issue.add_argument("--dns", action="append", default=[], help="DNS SAN (repeatable)")
    issue.set_defaults(func=_issue)

    jwt = sub.add_parser("jwt-svid", help="mint a JWT-SVID with the dev JWT signer")
    jwt.add_argument("--spiffe-id", required=True)
    jwt.add_argument("--audience", action="append", required=True)
    jwt.add_argument("--ttl", type=int, default=300, help="seconds")
    jwt.add_argument("--signer", type=Path, default=Path("certs/dev/jwt/signer.key"))
    jwt.add_argument("--out", type=Path, help="write to this file (0600) instead of stdout")
    jwt.set_defaults(func=_jwt_svid)
