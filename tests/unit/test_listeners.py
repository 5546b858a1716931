"""listeners.py: listen addresses checked free before the server opens or writes anything."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from taskpass.server.errors import ConfigError
from taskpass.server.listeners import refuse_taken, split_address


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something listens on (as a running server's would)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:8443", ("127.0.0.1", 8443)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:8444", ("::1", 8444)),
        (":8080", ("", 8080)),
    ],
)
def test_split_address(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:", "host:https", "h:70000", ""])
def test_an_address_without_a_port_is_a_config_error(address: str) -> None:
    with pytest.raises(ConfigError, match="give host:port"):
        split_address(address)


def test_a_taken_address_is_refused_naming_it(listening: int) -> None:
    address = f"127.0.0.1:{listening}"
    with pytest.raises(ConfigError) as caught:
        refuse_taken([f"127.0.0.1:{free_port()}", address])
    assert caught.value.message == (
        f"cannot listen on {address}: something already listens there (another taskpass "
        "server?); stop it, or give this one other [listen] addresses"
    )


def test_a_host_name_is_resolved_and_checked(listening: int) -> None:
    with pytest.raises(ConfigError, match=f"cannot listen on localhost:{listening}"):
        refuse_taken([f"localhost:{listening}"])


def test_free_addresses_and_port_zero_pass(listening: int) -> None:
    refuse_taken([f"127.0.0.1:{free_port()}", "127.0.0.1:0", f"localhost:{free_port()}"])


def test_a_port_a_closed_listener_left_behind_is_free() -> None:
    # A stopped server's port may sit in TIME_WAIT: a restart must not be refused for it.
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end goes to TIME_WAIT
        client.close()
    refuse_taken([f"127.0.0.1:{port}"])
