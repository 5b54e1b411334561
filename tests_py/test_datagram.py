"""Datagram endpoints on every loop: the same datagrams, addresses, errors and order as asyncio.

turboloop's datagram transport is asyncio's with native reads and sends (DatagramCore, in
src/binding/datagram_core.cpp, and python/turboloop/_datagram.py); these tests pin what that must
not change.
"""

from __future__ import annotations

import asyncio
import os
import socket
from asyncio import selector_events

import pytest

import turboloop


class Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[bytes, object]] = []
        self.errors: list[Exception] = []
        self.arrived = asyncio.Event()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.received.append((data, addr))
        self.arrived.set()

    def error_received(self, exc):
        self.errors.append(exc)
        self.arrived.set()


async def wait_for(protocol: Collector, count: int) -> None:
    async with asyncio.timeout(10):
        while len(protocol.received) + len(protocol.errors) < count:
            protocol.arrived.clear()
            await protocol.arrived.wait()


def send_plainly(addr, *payloads: bytes) -> None:
    """Sends from a plain blocking socket: over loopback each datagram is in the receiver's
    queue when sendto() returns, before the loop gets to read any of them."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for payload in payloads:
            sender.sendto(payload, addr)


def run(loop_factory, coro):
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_sizes_order_and_addresses(loop_factory, family, host):
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6")
    # Sizes around the buffer's edges, up to the largest UDP datagram over loopback.
    # (asyncio does not send empty datagrams.)
    sizes = [1, 1500, 65507 if family == socket.AF_INET else 65527, 7, 4096]

    async def main():
        loop = asyncio.get_running_loop()
        server_t, server = await loop.create_datagram_endpoint(Collector, local_addr=(host, 0), family=family)
        client_t, client = await loop.create_datagram_endpoint(
            Collector, remote_addr=server_t.get_extra_info("sockname")[:2], family=family
        )
        payloads = [os.urandom(size) for size in sizes]
        for count, payload in enumerate(payloads, 1):
            client_t.sendto(payload)
            await wait_for(server, count)  # one at a time: a full receive buffer drops datagrams
        assert [data for data, _ in server.received] == payloads
        assert {addr for _, addr in server.received} == {client_t.get_extra_info("sockname")}
        # Echo one back, addressed explicitly.
        server_t.sendto(b"back", server.received[0][1])
        await wait_for(client, 1)
        assert client.received == [(b"back", server_t.get_extra_info("sockname"))]
        client_t.close()
        server_t.close()

    run(loop_factory, main())


@pytest.mark.uvloop_xfail("uvloop's create_datagram_endpoint takes no AF_UNIX path")
def test_unix_datagram_addresses(loop_factory, tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        server_path = str(tmp_path / "server.sock")
        client_path = str(tmp_path / "client.sock")
        server_t, server = await loop.create_datagram_endpoint(
            Collector, local_addr=server_path, family=socket.AF_UNIX
        )
        client_t, client = await loop.create_datagram_endpoint(
            Collector, local_addr=client_path, remote_addr=server_path, family=socket.AF_UNIX
        )
        client_t.sendto(b"hello")
        await wait_for(server, 1)
        assert server.received == [(b"hello", client_path)]
        server_t.sendto(b"there", client_path)
        await wait_for(client, 1)
        assert client.received == [(b"there", server_path)]
        client_t.close()
        server_t.close()

    run(loop_factory, main())


def test_refused_goes_to_error_received(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        transport, protocol = await loop.create_datagram_endpoint(Collector, remote_addr=("127.0.0.1", closed_port))
        transport.sendto(b"anyone?")
        await wait_for(protocol, 1)
        assert [type(e) for e in protocol.errors] == [ConnectionRefusedError]
        assert protocol.received == []
        transport.close()

    run(loop_factory, main())


def test_closing_inside_datagram_received_stops_delivery(loop_factory):
    class CloseOnFirst(Collector):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            self.transport.close()

    async def main():
        loop = asyncio.get_running_loop()
        server_t, server = await loop.create_datagram_endpoint(CloseOnFirst, local_addr=("127.0.0.1", 0))
        send_plainly(server_t.get_extra_info("sockname"), *(b"%d" % i for i in range(5)))
        await wait_for(server, 1)
        for _ in range(5):
            await asyncio.sleep(0)
        assert [data for data, _ in server.received] == [b"0"]
        assert server_t.is_closing()

    run(loop_factory, main())


def test_a_changed_max_size_is_honoured(loop_factory, loop_name):
    if loop_name == "uvloop":
        pytest.skip("max_size is an attribute of asyncio's own transport; uvloop's has no such limit")

    async def main():
        loop = asyncio.get_running_loop()
        server_t, server = await loop.create_datagram_endpoint(Collector, local_addr=("127.0.0.1", 0))
        server_t.max_size = 10  # asyncio reads recvfrom(max_size): longer datagrams are cut
        send_plainly(server_t.get_extra_info("sockname"), b"0123456789abcdef")
        await wait_for(server, 1)
        assert [data for data, _ in server.received] == [b"0123456789"]
        server_t.close()

    run(loop_factory, main())


def test_callback_order_matches_asyncio():
    """One datagram per readiness event: a callback scheduled by datagram_received runs before
    the next datagram is delivered, as on asyncio."""

    def order(loop_factory):
        events: list[str] = []

        class Recorder(Collector):
            def datagram_received(self, data, addr):
                super().datagram_received(data, addr)
                events.append(data.decode())
                asyncio.get_running_loop().call_soon(events.append, "after " + data.decode())

        async def main():
            loop = asyncio.get_running_loop()
            server_t, server = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
            send_plainly(server_t.get_extra_info("sockname"), b"0", b"1", b"2")
            await wait_for(server, 3)
            await asyncio.sleep(0)
            server_t.close()

        run(loop_factory, main())
        return events

    expected = order(asyncio.new_event_loop)
    assert expected == ["0", "after 0", "1", "after 1", "2", "after 2"]
    assert order(turboloop.new_event_loop) == expected


# asyncio sends empty datagrams from 3.13 on (and counts a header in the buffer size with them).
SENDS_EMPTY_DATAGRAMS = hasattr(selector_events._SelectorDatagramTransport, "_header_size")


def test_sendto_arguments_as_asyncio(loop_factory, loop_name):
    """sendto() on unconnected and connected endpoints: numeric and named hosts, other buffer
    types, empty data, and asyncio's errors for bad data and a wrong address."""
    if loop_name == "uvloop":
        pytest.skip("uvloop's sendto() refuses a named host (ValueError: a DNS lookup is required)")

    async def main():
        loop = asyncio.get_running_loop()
        server_t, server = await loop.create_datagram_endpoint(Collector, local_addr=("127.0.0.1", 0))
        host, port = server_t.get_extra_info("sockname")
        sender_t, _ = await loop.create_datagram_endpoint(Collector, local_addr=("127.0.0.1", 0))
        sender_t.sendto(b"numeric", (host, port))
        sender_t.sendto(b"", (host, port))  # an empty datagram from 3.13 on; before, nothing
        sender_t.sendto(bytearray(b"bytearray"), (host, port))
        sender_t.sendto(memoryview(b"xmemoryviewx")[1:-1], (host, port))
        sender_t.sendto(b"named", ("localhost", port))
        sender_t.sendto(data=b"keywords", addr=(host, port))
        empty = [b""] if SENDS_EMPTY_DATAGRAMS else []
        await wait_for(server, 5 + len(empty))
        sent = [b"numeric", *empty, b"bytearray", b"memoryview", b"named", b"keywords"]
        assert [data for data, _ in server.received] == sent
        with pytest.raises(TypeError, match="data argument must be a bytes-like object, not 'str'"):
            sender_t.sendto("text", (host, port))

        connected_t, _ = await loop.create_datagram_endpoint(Collector, remote_addr=(host, port))
        connected_t.sendto(b"to the peer")
        connected_t.sendto(b"to the peer, named", (host, port))
        await wait_for(server, len(sent) + 2)
        assert [data for data, _ in server.received[len(sent):]] == [b"to the peer", b"to the peer, named"]
        with pytest.raises(ValueError, match="Invalid address: must be None or"):
            connected_t.sendto(b"elsewhere", (host, port + 1))
        for transport in (server_t, sender_t, connected_t):
            transport.close()

    run(loop_factory, main())


def test_sendto_after_close(loop_factory, loop_name):
    async def main():
        loop = asyncio.get_running_loop()
        server_t, server = await loop.create_datagram_endpoint(Collector, local_addr=("127.0.0.1", 0))
        connected_t, _ = await loop.create_datagram_endpoint(Collector, remote_addr=server_t.get_extra_info("sockname"))
        connected_t.close()
        await asyncio.sleep(0)
        connected_t.sendto(b"lost")  # asyncio counts it and drops it, without an error
        await asyncio.sleep(0.05)
        assert server.received == []
        server_t.close()

    run(loop_factory, main())


@pytest.mark.uvloop_xfail("uvloop raises ValueError for an address of another family")
def test_sendto_to_an_address_of_the_wrong_family_fails_as_asyncio(loop_factory):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")

    def outcome(factory):
        async def main():
            loop = asyncio.get_running_loop()
            transport, protocol = await loop.create_datagram_endpoint(Collector, local_addr=("127.0.0.1", 0))
            try:
                transport.sendto(b"x", ("::1", 9))
                await asyncio.sleep(0.01)
                return [type(e) for e in protocol.errors]
            except Exception as exc:  # noqa: BLE001
                return type(exc)
            finally:
                transport.close()

        return run(factory, main())

    assert outcome(loop_factory) == outcome(asyncio.new_event_loop)


def test_alternating_peers_get_their_own_addresses(loop_factory):
    """Datagrams from and to several peers in turn: each is reported with, and sent to, its own
    address (turboloop reuses the last peer's address when the next datagram has the same)."""

    async def main():
        loop = asyncio.get_running_loop()
        server_t, server = await loop.create_datagram_endpoint(Collector, local_addr=("127.0.0.1", 0))
        peers = [await loop.create_datagram_endpoint(Collector, local_addr=("127.0.0.1", 0)) for _ in range(3)]
        server_addr = server_t.get_extra_info("sockname")
        for round_ in range(3):
            for index, (transport, _) in enumerate(peers):
                transport.sendto(b"%d-%d" % (round_, index), server_addr)
                await wait_for(server, round_ * 3 + index + 1)
        expected = [
            (b"%d-%d" % (round_, index), transport.get_extra_info("sockname"))
            for round_ in range(3)
            for index, (transport, _) in enumerate(peers)
        ]
        assert server.received == expected
        # Replies in turn, to each sender's address as received, then to a new tuple of it.
        for data, addr in server.received:
            server_t.sendto(b"re:" + data, addr)
        for _, protocol in peers:
            await wait_for(protocol, 3)
        for index, (transport, protocol) in enumerate(peers):
            assert [data for data, _ in protocol.received] == [b"re:%d-%d" % (r, index) for r in range(3)]
            server_t.sendto(b"again", tuple(transport.get_extra_info("sockname")))
            await wait_for(protocol, 4)
            assert protocol.received[-1] == (b"again", server_addr)
        for transport, _ in peers:
            transport.close()
        server_t.close()

    run(loop_factory, main())
