"""``web.main.bind``: the port check every serving command runs before it starts anything.

A port is busy when something accepts connections on it, whatever address family or
socket options its listener used: the API's gRPC listener is a dual-stack socket bound
to a v4-mapped address, which a plain IPv4 bind is expected (not guaranteed) to refuse.
"""

from __future__ import annotations

import socket

import pytest
from protolens_server.web.main import PortInUse, bind


def _listener(family: int, address: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((address, 0))
    sock.listen(8)
    return sock


@pytest.mark.parametrize(
    ("family", "address"),
    [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::ffff:127.0.0.1")],
    ids=["ipv4", "v4-mapped dual-stack (gRPC's)"],
)
def test_a_port_with_a_live_listener_is_refused_with_the_flag_to_change(
    family: int, address: str
) -> None:
    with _listener(family, address) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(PortInUse) as err:
            bind("127.0.0.1", port, "the API", "--port").close()
    assert f"the API cannot listen on 127.0.0.1:{port}: Address already in use" in str(err.value)
    assert "pass --port N" in str(err.value)


def test_a_free_port_and_port_zero_bind_and_listen() -> None:
    with bind("127.0.0.1", 0, "the gallery", "--web-port") as sock:
        port = sock.getsockname()[1]
        assert port > 0
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # it listens
    with bind("127.0.0.1", port, "the gallery", "--web-port"):
        pass  # closed listener: free again (SO_REUSEADDR rides over TIME_WAIT)
