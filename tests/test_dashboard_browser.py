"""The status page in a real headless browser: Playwright drives Debian's chromium
(/usr/bin/chromium; ``.ci/run`` installs it) against a real cluster's scheduler after real
tasks and objects exist. Each page's rendered content is checked, live updates are seen
without a reload, and a screenshot of every page is saved under test-artifacts/dashboard/.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

import graphstore
from graphstore import session

from fixtures.clusters import init_local_cluster
from fixtures.processes import kill_all, session_processes, wait_gone
from helpers import wait_for
from test_dashboard import MB, explode, inc, make_array

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("GRAPHSTORE_TEST_ARTIFACTS",
                                Path(__file__).resolve().parent.parent / "test-artifacts"))
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: pip install -e '.[test]' (see .ci/run)")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (see .ci/run)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@graphstore.remote
class PageCounter:
    def __init__(self):
        self.n = 0

    def add(self):
        self.n += 1
        return self.n


class Populated:
    """A private cluster with finished, failed and stored work, and refs held to it."""

    def __init__(self):
        graphstore.shutdown()
        self.ctx = init_local_cluster(num_cpus=2)
        self.session = session.current_local_cluster().session_name
        self.worker_pids = {p.pid for p in session.current_local_cluster().workers}
        self.small = graphstore.put(7)
        self.big = graphstore.put(np.zeros(2 * MB, dtype=np.uint8))
        self.chain = inc.remote(inc.remote(self.small))
        self.array = make_array.remote(3 * MB)
        self.failed = explode.remote()
        self.actor = PageCounter.options(name="page-counter").remote()
        assert graphstore.get([self.actor.add.remote() for _ in range(3)]) == [1, 2, 3]
        # The scheduler records calls a moment after their caller has the results.
        wait_for(lambda: sum(1 for t in graphstore.list_tasks()
                             if t["name"] == "PageCounter.add"
                             and t["state"] == "done") >= 3, timeout=10)
        assert graphstore.get(self.chain) == 9
        assert graphstore.get(self.array).nbytes == 3 * MB
        with pytest.raises(ValueError):
            graphstore.get(self.failed)

    @property
    def url(self) -> str:
        return self.ctx.dashboard_url


@pytest.fixture(scope="module")
def populated():
    cluster = Populated()
    try:
        yield cluster
    finally:
        graphstore.shutdown()
        left = wait_gone(session_processes(session_name=cluster.session), timeout=5.0)
        if left:
            kill_all(left)
            pytest.fail(f"the browser tests' cluster left processes behind: {left}")


@pytest.fixture
def page(browser, request):
    """A fresh page; console errors (a CSP violation, a script error) fail the test; a
    full-page screenshot is saved when the test ends."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
           if m.type == "error" else None)
    tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    yield tab
    ARTIFACTS.joinpath("dashboard").mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / "dashboard" / f"{request.node.name}.png"),
                   full_page=True)
    context.close()
    assert not problems, problems


def open_page(page, url: str) -> None:
    page.goto(url)
    # The first poll has rendered once the page counts it.
    page.wait_for_function("() => Number(document.body.dataset.polls || 0) >= 1")


def test_overview_page(populated, page):
    open_page(page, populated.url + "/")
    assert page.title() == "graphstore · Overview"
    assert page.text_content("[data-field=workers]") == "2"
    assert page.text_content("[data-field=cpus]") == "0 / 2"
    # Three tasks and three actor calls.
    assert page.text_content(".chips [data-state=done]") == "done 6"
    assert page.text_content(".chips [data-state=failed]") == "failed 1"
    assert page.text_content("[data-card=objects] .detail").endswith("in all")
    assert page.locator("[data-resource=CPU]").count() == 1
    assert page.locator("nav a[aria-current]").text_content() == "Overview"
    assert re.match(r"updated ", page.text_content("#status"))


def test_pages_update_live_without_a_reload(populated, page):
    open_page(page, populated.url + "/")
    page.evaluate("window.__sameDocument = true")
    assert page.text_content(".chips [data-state=done]") == "done 6"
    assert graphstore.get([inc.remote(i) for i in range(4)]) == [1, 2, 3, 4]
    page.wait_for_function(
        "() => document.querySelector('.chips [data-state=done]').textContent === 'done 10'")
    assert page.evaluate("window.__sameDocument") is True


def test_workers_page(populated, page):
    open_page(page, populated.url + "/workers")
    rows = page.locator("tr.worker-row")
    assert rows.count() == 2
    pids = {int(rows.nth(i).get_attribute("data-worker-pid")) for i in range(2)}
    assert pids == populated.worker_pids
    # The store bars fill as the heartbeats report the 2 + 3 MB objects.
    page.wait_for_function("""() => {
        const used = [...document.querySelectorAll('tr.worker-row [role=meter]')]
            .map(m => Number(m.getAttribute('aria-valuenow')));
        return used.reduce((a, b) => a + b, 0) >= 5 * 1024 * 1024;
    }""")
    text = rows.first.inner_text()
    assert "ago" in text and "MiB" in text
    width = page.locator("tr.worker-row .bar > span").first.evaluate(
        "span => span.style.width")
    assert width.endswith("%")


def test_tasks_page(populated, page):
    open_page(page, populated.url + "/tasks")
    names = page.locator("tr.task-row td:first-child").all_text_contents()
    assert {"inc", "make_array", "explode"} <= set(names)
    failed_row = page.locator("tr.task-row[data-task-state=failed]").first
    assert "ValueError: kaput at the bottom" in failed_row.inner_text()
    failure = page.locator("details[data-failure-id]").first
    assert "explode" in failure.locator("summary").inner_text()
    assert not failure.locator("pre.traceback").is_visible()
    failure.locator("summary").click()
    traceback = failure.locator("pre.traceback")
    assert traceback.is_visible()
    assert traceback.inner_text().startswith("Traceback (most recent call last):")
    assert "_explode" in traceback.inner_text()
    # A later poll keeps the traceback open.
    polls = int(page.evaluate("document.body.dataset.polls"))
    page.wait_for_function(f"() => Number(document.body.dataset.polls) > {polls}")
    assert page.locator("details[data-failure-id][open]").count() == 1
    page.click(".filters a[href='/tasks?state=failed']")
    page.wait_for_url("**/tasks?state=failed")
    page.wait_for_function("() => Number(document.body.dataset.polls || 0) >= 1")
    states = page.locator("tr.task-row").evaluate_all(
        "rows => rows.map(r => r.dataset.taskState)")
    assert states and set(states) == {"failed"}


def test_objects_page(populated, page):
    open_page(page, populated.url + "/objects")
    page.wait_for_function("() => document.querySelectorAll('tr.object-row').length >= 2")
    ids = page.locator("tr.object-row").evaluate_all(
        "rows => rows.map(r => r.dataset.objectId)")
    assert ids[:2] == [populated.array.hex(), populated.big.hex()]
    first = page.locator("tr.object-row").first.inner_text()
    assert "3.0 MiB" in first and "store of pid" in first and "make_array" in first


def test_actors_page(populated, page):
    open_page(page, populated.url + "/actors")
    headers = page.locator("th").all_text_contents()
    assert headers == ["actor", "class", "name", "state", "worker", "node", "pending calls",
                       "restarts"]
    assert page.locator("tr.actor-row").count() == 1
    row = page.locator("tr.actor-row").first.inner_text()
    assert "PageCounter" in row and "page-counter" in row and "alive" in row
    assert page.locator("[data-note=no-actors]").count() == 0


def test_graph_page_shows_the_rendered_graph(populated, page):
    open_page(page, populated.url + "/graph")
    page.wait_for_function("""() => {
        const image = document.getElementById('graph-image');
        return image && image.complete && image.naturalWidth > 0
            && document.body.dataset.graphDigest;
    }""")
    summary = page.text_content("#graph-summary")
    assert re.fullmatch(r"\d+ of \d+ nodes, \d+ edges\.", summary)
    assert page.locator("#graph-note").is_hidden()
    assert page.locator(".legend [data-state=failed]").count() == 1
    box = page.locator("#graph-image").bounding_box()
    assert box["width"] > 100 and box["height"] > 100
    # The picture is the scheduler's own rendering of its graph.
    src = page.get_attribute("#graph-image", "src")
    assert src.startswith("/api/graph.svg?limit=100&digest=")


def test_graph_page_says_when_it_is_truncated(populated, page):
    open_page(page, populated.url + "/graph?limit=3")
    note = page.locator("#graph-note")
    assert note.is_visible()
    assert re.match(r"Showing the 3 most recent of \d+ nodes", note.inner_text())
    page.wait_for_function("() => document.getElementById('graph-image').naturalWidth > 0")


def test_every_page_is_reachable_from_the_navigation(populated, page):
    open_page(page, populated.url + "/")
    for title, path in (("Status", "/status"), ("Workers", "/workers"), ("Tasks", "/tasks"),
                        ("Objects", "/objects"), ("Actors", "/actors"),
                        ("Task graph", "/graph"), ("Overview", "/")):
        page.click(f"nav a:text-is('{title}')")
        page.wait_for_url(populated.url + path)
        assert page.text_content("h1") == title
        page.wait_for_function("() => Number(document.body.dataset.polls || 0) >= 1")


# -- the status page: progress, workers' load, task stream --------------------------------

@graphstore.remote
def stream_step(x):
    return np.full(64 * 1024, x, dtype=np.uint8).sum()


@graphstore.remote
def stream_refuse(x):
    raise KeyError(f"no {x}")


def test_status_page_progress_shows_done_and_failed_per_function(populated, page):
    assert len(graphstore.get([stream_step.remote(i) for i in range(6)])) == 6
    for ref in [stream_refuse.remote(i) for i in range(2)]:
        with pytest.raises(KeyError):
            graphstore.get(ref)
    open_page(page, populated.url + "/status")
    assert page.title() == "graphstore · Status"
    row = page.locator(".progress-row[data-name=stream_step]")
    assert row.get_attribute("data-done") == "6" and row.get_attribute("data-failed") == "0"
    assert row.locator("[data-count=done]").text_content() == "done 6"
    refused = page.locator(".progress-row[data-name=stream_refuse]")
    assert refused.get_attribute("data-failed") == "2"
    assert refused.locator("[data-count=failed]").text_content() == "failed 2"
    # The bar is drawn: the failed part fills the whole of stream_refuse's bar.
    width = refused.locator(".progress-bar [data-part=failed]").evaluate(
        "span => span.getBoundingClientRect().width"
        " / span.parentNode.getBoundingClientRect().width")
    assert width == pytest.approx(1.0, abs=0.01)
    explode_row = page.locator(".progress-row[data-name=explode]")
    assert explode_row.get_attribute("data-failed") == "1"
    assert page.locator(".progress-row[data-name='PageCounter.add']").get_attribute(
        "data-done") == "3"
    # Live: more work shows without a reload.
    assert len(graphstore.get([stream_step.remote(i) for i in range(3)])) == 3
    page.wait_for_function("() => document.querySelector("
                           "'.progress-row[data-name=stream_step]').dataset.done === '9'")


def test_status_page_draws_each_workers_cpu_and_memory(populated, page):
    open_page(page, populated.url + "/status")
    cards = page.locator(".load-card")
    assert cards.count() == 2
    pids = {int(cards.nth(i).get_attribute("data-worker-pid")) for i in range(2)}
    assert pids == populated.worker_pids
    # Samples arrive once a second; the charts have points once two heartbeats came.
    page.wait_for_function("""() => [...document.querySelectorAll('.load-card')].every(card =>
        Number(card.querySelector('polyline[data-series=cpu]').dataset.points) >= 2
        && Number(card.querySelector('polyline[data-series=memory]').dataset.points) >= 2)""")
    text = cards.first.inner_text()
    assert "CPU" in text and "memory" in text and "MiB" in text


def test_a_lost_scheduler_is_shown_not_hidden(browser, fresh_cluster):
    ctx = fresh_cluster(num_cpus=1)
    tab = browser.new_page()
    try:
        tab.set_default_timeout(TIMEOUT_MS)
        open_page(tab, ctx.dashboard_url + "/workers")
        graphstore.shutdown()
        tab.wait_for_function(
            "() => document.getElementById('status').classList.contains('stale')")
        assert "cannot reach the scheduler" in tab.text_content("#status")
        assert tab.locator("tr.worker-row").count() == 1   # the last data stays
    finally:
        tab.close()


@graphstore.remote
def stream_make(n):
    return np.ones(n, dtype=np.uint8)


@graphstore.remote
def stream_total(array):
    return int(array.sum())


def test_status_page_task_stream_shows_runs_fetches_and_spills(browser, fresh_cluster, page):
    """Last in this module: it replaces the module's cluster with a small-store one."""
    ctx = fresh_cluster(num_cpus=2, object_store_memory=64 * MB)
    arrays = [stream_make.remote(4 * MB) for _ in range(4)]
    assert graphstore.get([stream_total.remote(a) for a in arrays]) == [4 * MB] * 4
    spilled = [graphstore.put(np.ones(20 * MB, dtype=np.uint8)) for _ in range(5)]
    open_page(page, ctx.dashboard_url + "/status?window=10")
    page.wait_for_function("""() => ['task', 'fetch', 'spill'].every(kind =>
        document.querySelector(`#task-stream rect.stream-bar[data-kind=${kind}]`))""")
    bars = page.locator("#task-stream rect.stream-bar[data-kind=task]")
    names = set(bars.evaluate_all("rects => rects.map(r => r.dataset.name)"))
    assert {"stream_make", "stream_total"} <= names
    # One colour per function name, different for the two functions.
    colours = {}
    for name, fill in bars.evaluate_all(
            "rects => rects.map(r => [r.dataset.name, r.getAttribute('fill')])"):
        colours.setdefault(name, set()).add(fill)
    assert len(colours["stream_make"]) == 1 and colours["stream_make"] != colours["stream_total"]
    assert page.locator("#task-stream rect[data-kind=spill]").first.get_attribute(
        "fill") == "url(#hatch-spill)"
    labels = page.locator("#task-stream text.row-label").all_text_contents()
    pids = {p.pid for p in session.current_local_cluster().workers}
    assert {f"worker pid {pid} @ " in " ".join(labels) for pid in pids} == {True}
    assert page.locator("[data-note=no-stream]").count() == 0
    assert page.locator(".stream-legend [data-name=stream_make]").count() == 1
    # Live: a new run shows as a new bar without a reload.
    before = bars.count()
    assert graphstore.get(stream_total.remote(arrays[0])) == 4 * MB
    page.wait_for_function(f"() => document.querySelectorAll("
                           f"'#task-stream rect.stream-bar[data-kind=task]').length > {before}")
    del spilled
