"""Binding a listener, with an error that says which listener could not bind."""

from __future__ import annotations

import socket


def listen(what: str, address: tuple[str, int], backlog: int) -> socket.socket:
    """A listening TCP socket on `address` (IPv6 when the host has a colon).

    A port in use, or an address not ours, raises OSError naming `what` and the address,
    so that `ivr serve` can say which of its listeners could not start."""
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server(address, family=family, backlog=backlog)
    except OSError as exc:
        raise OSError(exc.errno, f"{what} on {host}:{port}: {exc.strerror}") from exc
