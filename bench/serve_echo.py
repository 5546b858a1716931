"""The baseline: a bare gRPC echo over the same mTLS setup, `python -m bench.serve_echo CONFIG`.

Same certificates, client CAs and grpc.aio server options as the taskpass server started from
the same CONFIG (see app.TaskpassServer._serve); one generic unary handler returning the
request bytes, no interceptor, no serialization. Prints {"port"} when serving; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import grpc

from taskpass.server.config import load_config

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"


async def _echo(request: bytes, context: Any) -> bytes:
    return request


async def _serve(config_file: Path) -> None:
    listen = load_config(config_file).listen
    options = [
        ("grpc.max_receive_message_length", listen.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
            ),
        )
    )
    client_cas = b"".join(p.read_bytes() for p in listen.client_ca_files)
    credentials = grpc.ssl_server_credentials(
        [(listen.key_file.read_bytes(), listen.cert_file.read_bytes())],
        root_certificates=client_cas,
        require_client_auth=True,
    )
    port = server.add_secure_port(listen.mtls_address, credentials)
    await server.start()
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    print(json.dumps({"port": port}), flush=True)
    await stopping.wait()
    await server.stop(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_echo")
    parser.add_argument("config", type=Path)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
