"""``graphstore.core.node``: host identity and the address peers reach a server at."""
from __future__ import annotations

from graphstore.core.node import contact_host, default_node_id


def test_a_concrete_bind_address_is_advertised_as_is():
    assert contact_host("10.1.2.3", "tcp://127.0.0.1:6380") == "10.1.2.3"
    assert contact_host("127.0.0.1", "tcp://203.0.113.9:6380") == "127.0.0.1"


def test_a_wildcard_bind_advertises_the_address_on_the_route_to_the_scheduler():
    # The route to a loopback scheduler leaves from loopback; never the wildcard itself.
    assert contact_host("0.0.0.0", "tcp://127.0.0.1:6380") == "127.0.0.1"
    assert contact_host("", "tcp://127.0.0.1:6380") == "127.0.0.1"


def test_node_id_can_be_set_per_process(monkeypatch):
    monkeypatch.setenv("GRAPHSTORE_NODE_ID", "rack2-host7")
    assert default_node_id() == "rack2-host7"
    monkeypatch.delenv("GRAPHSTORE_NODE_ID")
    assert default_node_id() and default_node_id() != "rack2-host7"
