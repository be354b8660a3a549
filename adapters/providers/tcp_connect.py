"""A TCP connection to an upstream, with no trip through Trio's scheduler where none is needed.

Owns: `open_tcp`: an IP address is connected to directly on a non-blocking socket
(`connect_now`: Trio is asked to wait only if the handshake is still going when
`connect` returns, which on loopback it never is); a host name goes through
`trio.open_tcp_stream` (resolution, happy eyeballs). The stream has TCP_NODELAY set.
"""

from __future__ import annotations

import errno
import os
import socket

import trio


async def open_tcp(host: str, port: int) -> trio.SocketStream:
    """A TCP connection to `host`: an IP address is connected to directly; a name goes
    through `trio.open_tcp_stream` (resolution, and happy eyeballs across its addresses),
    which costs a nursery and a task per connection, about three times the CPU."""
    try:
        numeric = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:  # a name, not an address
        return await trio.open_tcp_stream(host, port)
    family, kind, proto, _, address = numeric[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        await connect_now(sock, address)
    except BaseException:
        sock.close()
        raise
    # sets TCP_NODELAY, as open_tcp_stream's streams have
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


async def connect_now(sock: socket.socket, address: object) -> None:
    """Connect the non-blocking `sock`, asking Trio to wait only if the handshake is still
    going when `connect` returns. On loopback (a provider beside the gateway) it has
    always finished by then; Trio's own `connect` waits for the socket to turn writable
    all the same: a trip through the scheduler and an epoll registration, about 55 us of
    a new connection's 100 (docs/performance.md, branch `admit`)."""
    err = sock.connect_ex(address)  # type: ignore[arg-type]
    if err == errno.EINPROGRESS:
        try:
            sock.getpeername()  # established already (ENOTCONN while the SYN is out)
            return
        except OSError:
            await trio.lowlevel.wait_writable(sock)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err != 0:
        raise OSError(err, f"Error connecting to {address!r}: {os.strerror(err)}")
