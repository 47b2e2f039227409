"""Mutual TLS in graphstore.core.comm and graphstore.core.tls, over real TCP on 127.0.0.1.

Certificates come from ``certs.make_pki`` (a cluster CA, a node certificate, and bad
ones). Each test runs its own asyncio loop; servers bind port 0. The cluster-level tests
(CLI processes, ``init()``) are in test_security.py.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import threading

import pytest

from certs import make_pki
from graphstore.core import protocol as p
from graphstore.core.comm import CommServer, connect
from graphstore.exceptions import (AuthenticationError, ConnectionLostError, TLSConfigError,
                                   TLSError)
from graphstore.core.tls import TLSConfig, exposure_warning, is_loopback, tls_from_settings

TOKEN = b"tls-unit-test-token" * 2


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def run(coro, timeout: float = 20.0):
    async def main():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(main())


class Server:
    """A CommServer answering Ping with "pong" and recording other messages."""

    def __init__(self, tls, **kwargs):
        self.received: list = []
        self.comms: list = []
        self.server = CommServer(TOKEN, self._on_comm, tls=tls, **kwargs)
        self.server.listen(0, "127.0.0.1")
        port = self.server.bound_address()[1]
        self.address = f"tcp://127.0.0.1:{port}"

    def _on_comm(self, comm):
        comm.handler = self._handle
        self.comms.append(comm)
        asyncio.ensure_future(comm.read_loop())

    def _handle(self, comm, m):
        if type(m) is p.Ping:
            return "pong"
        self.received.append(m)
        return None

    def stop(self):
        self.server.stop()
        for comm in self.comms:
            comm.abort()


async def client(address, tls, token=TOKEN, timeout=5.0):
    comm = await connect(address, token, tls=tls, timeout=timeout)
    comm.handler = lambda c, m: None
    asyncio.ensure_future(comm.read_loop())
    return comm


# -- configuration ----------------------------------------------------------------------

def test_tls_needs_all_three_files_and_names_the_missing_ones(pki):
    assert tls_from_settings(None, "", None) is None
    with pytest.raises(TLSConfigError, match="tls_cert is set but tls_key and tls_ca are "
                                             "not"):
        tls_from_settings(str(pki.cert), None, None)
    with pytest.raises(TLSConfigError, match="tls_cert and tls_key are set but tls_ca is "
                                             "not"):
        tls_from_settings(str(pki.cert), str(pki.key), "")
    tls = tls_from_settings(str(pki.cert), str(pki.key), str(pki.ca))
    assert tls.cert == str(pki.cert) and not tls.check_hostname
    assert tls.server_context.verify_mode == ssl.CERT_REQUIRED
    assert tls.client_context.verify_mode == ssl.CERT_REQUIRED
    assert tls.client_context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_unusable_files_are_named(pki, tmp_path):
    missing = tmp_path / "nothing.pem"
    with pytest.raises(TLSConfigError, match=f"cannot read the TLS CA certificate file "
                                             f"{missing} \\(tls_ca\\)"):
        TLSConfig(pki.cert, pki.key, missing)
    unreadable = tmp_path / "locked.pem"
    unreadable.write_bytes(pki.key.read_bytes())
    unreadable.chmod(0)
    try:
        with open(unreadable, "rb"):
            readable_anyway = True      # root reads every file
    except PermissionError:
        readable_anyway = False
    if not readable_anyway:
        with pytest.raises(TLSConfigError, match="Permission denied"):
            TLSConfig(pki.cert, unreadable, pki.ca)
    with pytest.raises(TLSConfigError, match=f"private key {pki.stray_key} \\(tls_key\\) "
                                             f"does not belong to the certificate"):
        TLSConfig(pki.cert, pki.stray_key, pki.ca)
    with pytest.raises(TLSConfigError, match="holds no usable PEM certificate"):
        TLSConfig(pki.cert, pki.key, pki.key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(TLSConfigError, match=f"cannot use the TLS certificate {garbage}"):
        TLSConfig(garbage, pki.key, pki.ca)


def test_an_encrypted_key_is_refused_without_prompting(pki, tmp_path):
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(pki.key.read_bytes(), None)
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(TLSConfigError, match="is encrypted"):
        TLSConfig(pki.cert, encrypted, pki.ca)


def test_exposure_warning_only_for_non_loopback_without_tls(pki):
    tls = TLSConfig(pki.cert, pki.key, pki.ca)
    for host in ("127.0.0.1", "127.3.4.5", "::1", "localhost"):
        assert is_loopback(host)
        assert exposure_warning("the scheduler", host, 1, None) is None
    for host in ("0.0.0.0", "::", "10.1.2.3", "192.168.0.7", ""):
        assert not is_loopback(host)
        text = exposure_warning("the scheduler", host, 6380, None)
        assert text and "not a loopback address, without TLS" in text
        assert exposure_warning("the scheduler", host, 6380, tls) is None
    assert "[::]:6380" in exposure_warning("the scheduler", "::", 6380, None)


# -- connections ------------------------------------------------------------------------

def test_mutual_tls_connection_carries_requests_and_large_frames(pki):
    tls = TLSConfig(pki.cert, pki.key, pki.ca)

    async def main():
        s = Server(tls)
        c = await client(s.address, tls)
        assert c.encrypted and s.comms[0].encrypted
        assert await c.request(p.Ping(), timeout=5) == "pong"
        payload = bytes(range(256)) * (12 * 1024)          # 3 MiB: its own frame
        c.send(p.RegisterFunction(b"h" * 16, p.Frame(payload)))
        for _ in range(100):
            if s.received:
                break
            await asyncio.sleep(0.02)
        assert bytes(s.received[0].payload.buffer) == payload
        peer_cert = s.comms[0].stream.socket.getpeercert()
        assert dict(x[0] for x in peer_cert["subject"])["commonName"] == "node"
        await c.close()
        s.stop()
    run(main())


def test_write_from_thread_over_tls_goes_through_the_loop_in_order(pki):
    """Threads write calls at once; with TLS they hop to the loop (OpenSSL objects are
    not thread-safe) and still arrive complete and in each thread's order."""
    tls = TLSConfig(pki.cert, pki.key, pki.ca)

    async def main():
        s = Server(tls)
        c = await client(s.address, tls)
        loop_thread = threading.get_ident()
        seen_threads = []
        original = c.send_many

        def recording_send_many(messages):
            seen_threads.append(threading.get_ident())
            original(messages)
        c.send_many = recording_send_many

        def writer(n):
            for i in range(200):
                c.write_from_thread([p.IncRef([n.to_bytes(2, "big") + i.to_bytes(14, "big")])])
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        await asyncio.get_running_loop().run_in_executor(None, lambda: [t.join() for t in threads])
        for _ in range(200):
            if len(s.received) == 800:
                break
            await asyncio.sleep(0.02)
        assert len(s.received) == 800
        assert set(seen_threads) == {loop_thread}
        for n in range(4):
            ids = [m.ids[0] for m in s.received if m.ids[0][:2] == n.to_bytes(2, "big")]
            assert [int.from_bytes(i[2:], "big") for i in ids] == list(range(200))
        await c.close()
        s.stop()
    run(main())


def test_token_is_still_checked_inside_tls(pki):
    tls = TLSConfig(pki.cert, pki.key, pki.ca)

    async def main():
        s = Server(tls)
        with pytest.raises(AuthenticationError, match="cluster token") as info:
            await connect(s.address, b"wrong token", tls=tls)
        assert not isinstance(info.value, TLSError)
        c = await client(s.address, tls)
        assert await c.request(p.Ping(), timeout=5) == "pong"
        await c.close()
        s.stop()
    run(main())


@pytest.mark.parametrize("case", ["foreign", "expired", "stranger-server", "misnamed",
                                  "plain-server"])
def test_refused_certificates_give_clear_client_errors(pki, case, caplog):
    good = TLSConfig(pki.cert, pki.key, pki.ca)
    server_tls, client_tls, member = good, good, good
    if case == "foreign":
        client_tls = TLSConfig(pki.foreign_cert, pki.foreign_key, pki.ca)
        expected = f"refused this process's certificate {pki.foreign_cert}: it is not signed"
    elif case == "expired":
        client_tls = TLSConfig(pki.expired_cert, pki.expired_key, pki.ca)
        expected = f"refused this process's certificate {pki.expired_cert}: it has expired"
    elif case == "stranger-server":
        server_tls = member = TLSConfig(pki.foreign_cert, pki.foreign_key, pki.other_ca)
        expected = "refused the server's certificate: it is not signed by the cluster CA"
    elif case == "misnamed":
        server_tls = TLSConfig(pki.misnamed_cert, pki.misnamed_key, pki.ca)
        client_tls = TLSConfig(pki.cert, pki.key, pki.ca, check_hostname=True)
        expected = "not issued for the host in the address"
    else:
        server_tls = member = None
        expected = "the server does not speak TLS"

    async def main():
        s = Server(server_tls)
        with pytest.raises(TLSError, match=expected):
            await connect(s.address, TOKEN, tls=client_tls)
        c = await client(s.address, member)   # the server keeps serving its members
        assert await c.request(p.Ping(), timeout=5) == "pong"
        await c.close()
        await asyncio.sleep(0.05)
        s.stop()

    with caplog.at_level(logging.WARNING, logger="graphstore.comm"):
        run(main())
    assert any("refused connection" in r.getMessage() for r in caplog.records
               if r.name == "graphstore.comm")


def test_hostname_is_not_checked_by_default(pki):
    """A certificate from the cluster CA issued for another host is accepted unless
    tls_check_hostname is on (the CA is the trust boundary)."""
    async def main():
        s = Server(TLSConfig(pki.misnamed_cert, pki.misnamed_key, pki.ca))
        c = await client(s.address, TLSConfig(pki.cert, pki.key, pki.ca))
        assert await c.request(p.Ping(), timeout=5) == "pong"
        await c.close()
        s.stop()
    run(main())


def test_client_without_certificate_is_refused(pki, caplog):
    """A TLS client that presents no certificate (only trusts the CA)."""
    tls = TLSConfig(pki.cert, pki.key, pki.ca)

    async def main():
        from tornado.tcpclient import TCPClient
        s = Server(tls)
        context = ssl.create_default_context(cafile=str(pki.ca))
        context.check_hostname = False
        stream = await TCPClient().connect("127.0.0.1", int(s.address.rsplit(":", 1)[1]),
                                           ssl_options=context)
        with pytest.raises(Exception) as info:
            await asyncio.wait_for(stream.read_bytes(1), 5)
        assert "CERTIFICATE_REQUIRED" in str(info.value) or "certificate required" in str(
            getattr(info.value, "real_error", ""))
        c = await client(s.address, tls)
        assert await c.request(p.Ping(), timeout=5) == "pong"
        await c.close()
        s.stop()

    with caplog.at_level(logging.WARNING, logger="graphstore.comm"):
        run(main())
    assert any("presented no certificate" in r.getMessage() for r in caplog.records)


def test_client_without_tls_is_told_to_configure_it(pki, caplog):
    async def main():
        s = Server(TLSConfig(pki.cert, pki.key, pki.ca), handshake_timeout=0.5)
        with pytest.raises(ConnectionLostError, match="if the cluster uses TLS, give this "
                                                      "process its certificate"):
            await connect(s.address, TOKEN, tls=None, timeout=5)
        s.stop()

    with caplog.at_level(logging.WARNING, logger="graphstore.comm"):
        run(main())
    assert any("no TLS handshake within" in r.getMessage() for r in caplog.records)


def test_silent_tls_peer_is_dropped_after_the_handshake_timeout(pki, caplog):
    """A peer that opens TCP and never starts TLS does not hold the server's handshake
    forever (TLS writes wait for the peer: the whole handshake has a deadline)."""
    tls = TLSConfig(pki.cert, pki.key, pki.ca)

    async def main():
        from tornado.tcpclient import TCPClient
        s = Server(tls, handshake_timeout=0.3)
        stream = await TCPClient().connect("127.0.0.1", int(s.address.rsplit(":", 1)[1]))
        data = b""
        try:
            while True:
                data += await asyncio.wait_for(stream.read_bytes(1024, partial=True), 5)
        except Exception as exc:
            closed = type(exc).__name__
        assert closed == "StreamClosedError" and data == b""
        s.stop()

    with caplog.at_level(logging.WARNING, logger="graphstore.comm"):
        run(main())


def test_tls_client_whose_plain_server_greeted_first_is_told_so(pki, caplog):
    """The server's plain greeting may arrive before the client starts TLS (Tornado
    then cannot start it): the client still says the server does not speak TLS, and
    the server's log still says a TLS client came."""
    from graphstore.core.comm import client as comm_client
    from tornado.tcpclient import TCPClient
    tls = TLSConfig(pki.cert, pki.key, pki.ca)

    async def main():
        s = Server(None)
        host, port = s.address[len("tcp://"):].rsplit(":", 1)
        stream = await TCPClient().connect(host, int(port))
        for _ in range(100):                      # until the greeting is buffered
            if stream._read_buffer_size:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(TLSError, match="does not speak TLS \\(it greeted in plain"):
            await comm_client.start_tls(stream, host, s.address, tls, 5)
        for _ in range(100):
            if any("a TLS client connected" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.01)
        s.stop()

    with caplog.at_level(logging.WARNING, logger="graphstore.comm"):
        run(main())
    assert any("a TLS client connected, but this server runs without TLS" in r.getMessage()
               for r in caplog.records)
