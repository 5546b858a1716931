"""The small plain-HTTP listener: JWKS and OAuth metadata for relying parties, /healthz, and
Prometheus metrics at /metrics.

Key material here is public by construction (the JWKS has no private members).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from taskpass.server.listeners import split_address

JWKS_PATH = "/.well-known/jwks.json"
METADATA_PATH = "/.well-known/oauth-authorization-server"
METRICS_PATH = "/metrics"
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def build_http_app(
    *,
    jwks_json: Callable[[], bytes],
    metadata: Callable[[], dict[str, Any]],
    ready: Callable[[], Awaitable[bool]],
    metrics: Callable[[], Awaitable[bytes]] | None = None,
) -> web.Application:
    async def get_jwks(_: web.Request) -> web.Response:
        return web.Response(
            body=jwks_json(),
            content_type="application/jwk-set+json",
            headers={"Cache-Control": "public, max-age=60"},
        )

    async def get_metadata(_: web.Request) -> web.Response:
        return web.json_response(metadata())

    async def get_health(_: web.Request) -> web.Response:
        ok = await ready()
        return web.json_response(
            {"status": "ok" if ok else "unavailable"}, status=200 if ok else 503
        )

    app = web.Application(client_max_size=4096)
    app.router.add_get(JWKS_PATH, get_jwks)
    app.router.add_get(METADATA_PATH, get_metadata)
    app.router.add_get("/healthz", get_health)
    if metrics is not None:
        render = metrics

        async def get_metrics(_: web.Request) -> web.Response:
            return web.Response(
                body=await render(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE}
            )

        app.router.add_get(METRICS_PATH, get_metrics)
    return app


async def start_http(app: web.Application, address: str) -> tuple[web.AppRunner, int]:
    """Start serving on host:port (port 0 picks one); returns the runner and the bound port."""
    host, port = split_address(address)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host or "127.0.0.1", port)
    await site.start()
    server = site._server  # aiohttp exposes the bound socket only here
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound
