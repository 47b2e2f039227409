"""The token handshake every connection starts with, before anything is decoded.

The server greets with ``HELLO`` (magic, protocol version, a nonce); the client answers
with ``ANSWER`` (its own nonce and an HMAC proof over both nonces with the cluster token);
the server's ``VERDICT`` says ok with its own proof, or names the refusal. The token never
crosses the wire, and a peer that does not know it gets nothing decoded.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import ssl
import struct

from tornado.iostream import IOStream, SSLIOStream, StreamClosedError

from graphstore.core.config import PROTOCOL_VERSION
from graphstore.exceptions import AuthenticationError, ConnectionLostError, ProtocolError

MAGIC = b"GSTR"
HELLO = struct.Struct("!4sH16s")           # magic, version, server nonce
ANSWER = struct.Struct("!4sH16s32s")       # magic, version, client nonce, client proof
VERDICT = struct.Struct("!B32s")           # status (0 ok), server proof or reason


def token_proof(token: bytes, label: bytes, a: bytes, b: bytes) -> bytes:
    return hmac.new(token, label + a + b, hashlib.sha256).digest()



async def server_handshake(stream: IOStream, token: bytes, timeout: float) -> None:
    nonce = os.urandom(16)
    await stream.write(HELLO.pack(MAGIC, PROTOCOL_VERSION, nonce))
    answer = await asyncio.wait_for(stream.read_bytes(ANSWER.size), timeout)
    magic, version, client_nonce, proof = ANSWER.unpack(answer)
    if magic != MAGIC:
        if answer[0] == 0x16 and answer[1] == 0x03:    # a TLS handshake record
            raise ProtocolError("a TLS client connected, but this server runs without TLS "
                                "(start it with --tls-cert/--tls-key/--tls-ca)")
        raise ProtocolError("not a graphstore peer (bad magic bytes)")
    if version != PROTOCOL_VERSION:
        await stream.write(VERDICT.pack(1, b"protocol version".ljust(32)))
        raise ProtocolError(f"protocol version {version} (this server speaks "
                            f"{PROTOCOL_VERSION})")
    if not hmac.compare_digest(proof, token_proof(token, b"client", nonce, client_nonce)):
        await stream.write(VERDICT.pack(2, b"cluster token".ljust(32)))
        raise AuthenticationError("wrong cluster token")
    await stream.write(VERDICT.pack(0, token_proof(token, b"server", client_nonce, nonce)))


async def client_handshake(stream: IOStream, token: bytes, timeout: float,
                            address: str) -> None:
    hint = ("check the server's log" if isinstance(stream, SSLIOStream) else
            "if the cluster uses TLS, give this process its certificate too (tls_cert, "
            "tls_key, tls_ca); otherwise check that the address is a graphstore server")
    try:
        hello = await asyncio.wait_for(stream.read_bytes(HELLO.size), timeout)
    except asyncio.TimeoutError:
        raise ConnectionLostError(f"{address} sent no graphstore greeting within "
                                  f"{timeout:g} s: {hint}") from None
    except StreamClosedError as exc:
        if isinstance(exc.real_error, ssl.SSLError):
            raise exc.real_error from None
        raise ConnectionLostError(f"{address} closed the connection before its graphstore "
                                  f"greeting: {hint}") from None
    magic, version, nonce = HELLO.unpack(hello)
    if magic != MAGIC:
        raise ProtocolError(f"{address} is not a graphstore server")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"{address} speaks protocol version {version}; this client "
                            f"speaks {PROTOCOL_VERSION}: install matching versions")
    client_nonce = os.urandom(16)
    await stream.write(ANSWER.pack(MAGIC, PROTOCOL_VERSION, client_nonce,
                                    token_proof(token, b"client", nonce, client_nonce)))
    status, proof = VERDICT.unpack(
        await asyncio.wait_for(stream.read_bytes(VERDICT.size), timeout))
    if status == 2:
        raise AuthenticationError(
            f"{address} rejected this process's cluster token: set GRAPHSTORE_TOKEN (or "
            f"the token file) to the token the scheduler was started with")
    if status != 0:
        raise ProtocolError(f"{address} refused the connection: "
                            f"{proof.rstrip().decode(errors='replace')}")
    if not hmac.compare_digest(proof, token_proof(token, b"server", client_nonce, nonce)):
        raise AuthenticationError(f"{address} does not know the cluster token")
