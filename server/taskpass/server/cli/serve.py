"""`taskpass serve`: run the server from a config file, or the embedded dev default."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from taskpass.server.app import serve_forever
from taskpass.server.config import dev_config, load_config


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = dev_config(Path.cwd()) if args.dev else load_config(args.config)
    asyncio.run(serve_forever(config, stop_signals=(signal.SIGINT, signal.SIGTERM)))
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("serve", help="run the taskpass server")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="TOML config (see docs/configuration.md)")
    source.add_argument(
        "--dev", action="store_true", help="embedded dev default: certs/dev, data/, dev policy"
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_serve)
