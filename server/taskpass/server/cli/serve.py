"""`taskpass serve`: run the server from a config file, or the embedded dev default."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from taskpass.server.api.observability import ACCESS_LOGGER
from taskpass.server.app import serve_forever
from taskpass.server.config import dev_config, load_config
from taskpass.server.logs import LOG_FORMATS, LogFormat, configure_logging


def _serve(args: argparse.Namespace) -> int:
    config = dev_config(Path.cwd()) if args.dev else load_config(args.config)
    # JSON lines for log pipelines, unless in dev mode where people read the terminal.
    log_format: LogFormat = args.log_format or ("text" if config.dev_mode else "json")
    configure_logging(log_format, level=args.log_level)
    if args.no_access_log:  # metrics and audit records still count every call
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.WARNING)
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
    p.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="json: one JSON object per line (default outside dev mode); text: for terminals",
    )
    p.add_argument(
        "--no-access-log",
        action="store_true",
        help="no access lines at all (by default only calls that did not end OK get one; "
        "[logging] access_log)",
    )
    p.set_defaults(func=_serve)
