"""The graph page highlights a result's critical path (``/graph?critical=<object id>``),
in the real browser against the populated cluster of the status page's browser tests;
screenshots go under test-artifacts/dashboard/ like theirs."""
from __future__ import annotations

import json

import graphstore
from helpers import wait_for
from test_dashboard_browser import browser, open_page, page, populated  # noqa: F401

CRITICAL_COLOR = "#d62728"


def _fetch(page, path: str):
    response = page.request.get(page.url.split("/graph")[0] + path)
    return response.status, response.text()


def test_graph_page_highlights_the_critical_path_of_a_chain(populated, page):  # noqa: F811
    chain = populated.chain                      # inc(inc(small)): two runs in a row
    # Runs report their spans with their results: wait until the scheduler has both.
    assert wait_for(lambda: _has_path(chain), timeout=10)
    open_page(page, populated.url + f"/graph?critical={chain.hex()}")
    page.wait_for_function("""() => {
        const image = document.getElementById('graph-image');
        return image && image.complete && image.naturalWidth > 0
            && document.body.dataset.graphDigest;
    }""")
    assert page.locator("#critical-path h2").inner_text() == "Critical path"
    steps = page.locator("tr.critical-step")
    assert steps.count() == 2
    assert [steps.nth(i).locator("td").nth(1).inner_text() for i in range(2)] == \
        ["inc", "inc"]
    assert "2 steps took" in page.inner_text("#critical-summary")
    assert page.locator(".legend [data-state=critical]").count() == 1
    src = page.get_attribute("#graph-image", "src")
    assert f"critical={chain.hex()}" in src
    # The picture draws the path in red; the JSON marks its nodes and edges.
    status, svg = _fetch(page, src)
    assert status == 200 and CRITICAL_COLOR in svg
    status, text = _fetch(page, f"/api/graph?critical={chain.hex()}")
    data = json.loads(text)
    critical = [n for n in data["nodes"] if n.get("critical")]
    assert sorted(n["type"] for n in critical) == ["object", "object", "task", "task"]
    assert chain.hex() in {n["id"] for n in critical}
    assert sum(1 for e in data["edges"] if e.get("critical")) == 3
    assert [s["name"] for s in data["graph"]["critical_path"]["steps"]] == ["inc", "inc"]


def test_graph_page_says_why_a_ref_has_no_critical_path(populated, page):  # noqa: F811
    open_page(page, populated.url + f"/graph?critical={populated.small.hex()}")
    problem = page.locator("#critical-problem")
    problem.wait_for()
    assert "was put, not computed by a task" in problem.inner_text()
    status, text = _fetch(page, "/api/graph?critical=not-an-id")
    assert status == 400 and "critical must be an object id" in json.loads(text)["error"]
    status, text = _fetch(page, "/graph?critical=abc")
    assert status == 400 and "32 hex digits" in text


def _has_path(ref) -> bool:
    try:
        return len(graphstore.critical_path(ref)["steps"]) == 2
    except ValueError:
        return False
