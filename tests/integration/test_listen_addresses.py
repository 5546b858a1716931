"""A second server on a running one's addresses and database: refused before it writes."""

from __future__ import annotations

import dataclasses

import pytest

from taskpass.server.app import TaskpassServer
from taskpass.server.config import ServerConfig
from taskpass.server.errors import ConfigError
from tests.integration.harness import Harness


def listening_on(
    config: ServerConfig, *, mtls: str | None = None, http: str | None = None
) -> ServerConfig:
    listen = config.listen
    listen = dataclasses.replace(
        listen,
        mtls_address=mtls or listen.mtls_address,
        http_address=http or listen.http_address,
    )
    return dataclasses.replace(config, listen=listen)


async def test_a_second_server_on_taken_addresses_is_refused_and_writes_nothing(
    harness: Harness,
) -> None:
    store = harness.server.store
    before = await store.audit.read(limit=1000)
    taken = f"127.0.0.1:{harness.server.ports.mtls}"
    second = listening_on(harness.server.config, mtls=taken)

    with pytest.raises(ConfigError) as caught:
        await TaskpassServer.start(second)

    assert caught.value.message.startswith(f"cannot listen on {taken}: something already listens")
    # Its startup would have audited a policy_loaded into the running server's database.
    assert await store.audit.read(limit=1000) == before


async def test_the_http_address_is_checked_too(harness: Harness) -> None:
    taken = f"127.0.0.1:{harness.server.ports.http}"
    second = listening_on(harness.server.config, http=taken)
    with pytest.raises(ConfigError) as caught:
        await TaskpassServer.start(second)
    assert caught.value.message.startswith(f"cannot listen on {taken}: something already listens")


async def test_an_address_grpc_cannot_bind_is_a_config_error_not_a_traceback(
    harness: Harness,
) -> None:
    # TEST-NET-1 (RFC 5737) is on no interface here: the check leaves it to the listener, whose
    # bind fails. Nothing is sent anywhere.
    second = listening_on(harness.server.config, mtls="192.0.2.1:8443")
    with pytest.raises(ConfigError) as caught:
        await TaskpassServer.start(second)
    assert caught.value.message.startswith("cannot listen on 192.0.2.1:8443: the address is taken")
