"""loop.getaddrinfo / loop.getnameinfo: the same results and socket.gaierror as asyncio, and on
turboloop the look-up runs on turboloop's native pool (its default executor)."""

from __future__ import annotations

import socket
import threading

import pytest


def resolve(loop, *args, **kwargs):
    return loop.run_until_complete(loop.getaddrinfo(*args, **kwargs))


@pytest.mark.parametrize(
    "host, port, kwargs",
    [
        ("127.0.0.1", 80, {"type": socket.SOCK_STREAM}),
        ("localhost", "http", {"family": socket.AF_INET}),
        ("::1", 443, {"proto": socket.IPPROTO_TCP}),
        (None, 0, {"flags": socket.AI_PASSIVE, "type": socket.SOCK_DGRAM}),
    ],
)
def test_getaddrinfo_matches_the_socket_module(loop, host, port, kwargs):
    assert resolve(loop, host, port, **kwargs) == socket.getaddrinfo(host, port, **kwargs)


def test_getaddrinfo_unknown_service_raises_gaierror(loop):
    with pytest.raises(socket.gaierror) as raised:
        resolve(loop, "127.0.0.1", "no-such-service-turboloop")
    with pytest.raises(socket.gaierror) as expected:
        socket.getaddrinfo("127.0.0.1", "no-such-service-turboloop")
    assert raised.value.args == expected.value.args


def test_getnameinfo_matches_the_socket_module(loop):
    flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    result = loop.run_until_complete(loop.getnameinfo(("127.0.0.1", 8080), flags))
    assert result == socket.getnameinfo(("127.0.0.1", 8080), flags) == ("127.0.0.1", "8080")


def test_getnameinfo_bad_address_raises_as_the_socket_module(loop):
    with pytest.raises(TypeError) as raised:
        loop.run_until_complete(loop.getnameinfo("127.0.0.1"))
    with pytest.raises(TypeError) as expected:
        socket.getnameinfo("127.0.0.1", 0)
    assert str(raised.value) == str(expected.value)


def test_turboloop_resolves_on_its_native_pool(monkeypatch):
    import turboloop

    threads = []
    real = socket.getaddrinfo

    def recording(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    loop = turboloop.new_event_loop()
    try:
        assert resolve(loop, "127.0.0.1", 80) == real("127.0.0.1", 80)
        assert isinstance(loop._default_executor, turboloop.ThreadPoolExecutor)
        assert threads and threads[0] in loop._default_executor._threads
    finally:
        loop.close()
