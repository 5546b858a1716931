"""`taskpass policy check|test|keygen|sign|verify` (offline) and `load|show` (a running server).

The review workflow of the security team: write a document, `test` it against cases, `sign` it
with a key whose public half is in the server's `[policy] signers`, then `load` it (or install
it with its `.sig` where the server watches). `verify` checks a signature as the server will.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from taskpass.client import cli_admin
from taskpass.server.errors import ConfigError
from taskpass.server.policy import signing
from taskpass.server.policy.engine import PolicyEngine
from taskpass.server.policy.safe_yaml import read_bounded
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


def _keygen(args: argparse.Namespace) -> int:
    private, public = args.out, Path(f"{args.out}.pub.pem")
    for path in (private, public):
        if path.exists():
            raise ConfigError(f"{path} exists: refusing to overwrite a key; pick another --out")
    key = signing.generate_key()
    private.parent.mkdir(parents=True, exist_ok=True)
    # the private key is created 0600 before anything is written into it
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(signing.private_pem(key))
    public.write_bytes(signing.public_pem(key))
    signer = signing.Signer.from_pem(signing.public_pem(key), source=str(public))
    print(f"private key {private} (keep it offline), public key {public}")
    print(f'add to the server config: [policy] signers = ["{public}"]  # {signer.key_id}')
    return 0


def _sign(args: argparse.Namespace) -> int:
    document = read_bounded(args.file)
    PolicyEngine.from_yaml(document, source=str(args.file))  # never sign what cannot load
    key = signing.load_private_key(args.key)
    out = args.out or signing.signature_path(args.file)
    out.write_bytes(signing.sign(document, key))
    signer = signing.Signer(key.public_key(), str(args.key))
    print(f"{out}: signed {args.file} with {signer.key_id}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    document = read_bounded(args.file)
    signature_file = args.signature or signing.signature_path(args.file)
    if not signature_file.exists():
        raise ConfigError(f"{args.file}: no signature at {signature_file}; sign it first")
    verifier = signing.PolicyVerifier.from_files(args.signer)
    signer = verifier.verify(document, read_bounded(signature_file), source=str(args.file))
    engine = PolicyEngine.from_yaml(document, source=str(args.file))
    print(f"{args.file}: signature ok ({signer.key_id}, {signer.source}), version {engine.version}")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("policy", help="check, test, sign and load policy documents")
    sub = p.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND")
    check = sub.add_parser("check", help="load and type-check a policy document")
    check.add_argument("file", type=Path)
    check.set_defaults(func=_check)
    test = sub.add_parser("test", help="run a file of cases with expected decisions")
    test.add_argument("file", type=Path)
    test.add_argument("--cases", type=Path, required=True)
    test.set_defaults(func=_test)
    keygen = sub.add_parser("keygen", help="make an Ed25519 policy signing key pair")
    keygen.add_argument(
        "--out", type=Path, required=True, help="private key file; the public key is OUT.pub.pem"
    )
    keygen.set_defaults(func=_keygen)
    sign = sub.add_parser("sign", help="write FILE.sig, a detached signature of FILE")
    sign.add_argument("file", type=Path)
    sign.add_argument("--key", type=Path, required=True, help="PEM private key (Ed25519/ECDSA)")
    sign.add_argument("--out", type=Path, help="signature file (default FILE.sig)")
    sign.set_defaults(func=_sign)
    verify = sub.add_parser("verify", help="check FILE.sig with the signers' public keys")
    verify.add_argument("file", type=Path)
    verify.add_argument(
        "--signer", type=Path, action="append", required=True, help="a public key (repeatable)"
    )
    verify.add_argument("--signature", type=Path, help="signature file (default FILE.sig)")
    verify.set_defaults(func=_verify)
    cli_admin.register_policy_commands(sub)
