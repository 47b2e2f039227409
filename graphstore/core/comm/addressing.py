"""Cluster addresses: ``tcp://HOST:PORT``."""
from __future__ import annotations


def parse_address(address: str) -> tuple[str, int]:
    """``tcp://host:port`` (or ``host:port``) to ``(host, port)``, with a clear error."""
    text = address
    if text.startswith("tcp://"):
        text = text[len("tcp://"):]
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"invalid address {address!r}: expected tcp://HOST:PORT")
    return host.strip("[]"), int(port)
