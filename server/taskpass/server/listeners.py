"""Checking, before anything is opened or written, that the listen addresses are free.

Why: a second `taskpass serve` on the same config (a second `make run`) would otherwise open the
first one's database, write its startup audit records (`policy_loaded`) there, and only then fail
to bind, with grpc's RuntimeError as a traceback. Binding a plain socket to each address first
catches that case with a message that says what to do. It cannot close the race with a process
that binds in between; `bind_error` words what grpc says then.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterable

from taskpass.server.errors import ConfigError


def split_address(address: str) -> tuple[str, int]:
    """host and port of `host:port` or `[v6]:port`; ConfigError for anything else."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"listen address {address!r}: give host:port, e.g. 127.0.0.1:8443")
    return host.removeprefix("[").removesuffix("]"), int(port_text)


def refuse_taken(addresses: Iterable[str]) -> None:
    """ConfigError naming the first address something already listens on. Port 0 (any free
    port) is never taken; addresses this machine cannot bind for other reasons are left to the
    listeners themselves, which say so."""
    for address in addresses:
        host, port = split_address(address)
        if port == 0:
            continue
        try:
            candidates = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except socket.gaierror:
            continue  # an unknown host name: the listener's own error names it
        for family, kind, proto, _, where in candidates:
            with contextlib.closing(socket.socket(family, kind, proto)) as probe:
                # As the listeners do: a port left in TIME_WAIT by a stopped server is free.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(where)
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        raise ConfigError(in_use(address)) from None


def in_use(address: str) -> str:
    return (
        f"cannot listen on {address}: something already listens there (another taskpass "
        "server?); stop it, or give this one other [listen] addresses"
    )


def bind_error(address: str) -> ConfigError:
    """What to say when grpc could not bind `address` after the check above passed."""
    return ConfigError(
        f"cannot listen on {address}: the address is taken or not on this machine; "
        "check [listen] in the config"
    )
