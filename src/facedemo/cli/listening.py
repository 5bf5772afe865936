"""The listening sockets of `facedemo serve`, bound before anything slow happens.

Bound first, a port already in use fails the command in a fraction of a second, naming the
address, instead of after TensorFlow and the models have loaded (uvicorn binds only once the
application is imported). Handed to uvicorn already bound, rather than bound again there, they
leave no moment in which another process could take the port.
"""

from __future__ import annotations

import socket


def bind_listeners(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to `port` on every address `host` resolves to, as uvicorn's own binding
    (asyncio's `create_server`) does: "localhost" gives 127.0.0.1 and ::1. Not yet listening:
    uvicorn starts listening once the application has started. OSError if one cannot bind."""
    resolved = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners: list[socket.socket] = []
    try:
        for family, kind, protocol, _, address in dict.fromkeys(resolved):
            listener = socket.socket(family, kind, protocol)
            listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # else "::" would take the IPv4 port as well
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind(address)
            listener.set_inheritable(True)  # --workers hands it to spawned processes
    except OSError:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def address_text(host: str, port: int) -> str:
    """host:port, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
