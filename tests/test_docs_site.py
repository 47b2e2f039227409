"""The documentation site (mkdocs.yml, docs/): it builds with ``mkdocs build --strict``
(no broken link or anchor, no unresolved reference, no warning), its API reference is
generated from the code and covers every public name, and its command-line page is
rendered from ``graphstore.cli.build_parser()``.

The build runs in a subprocess, as a user's ``mkdocs build --strict`` would: pytest's
warnings-are-errors filter is for graphstore's code, not for mkdocs' plugins.
"""
from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import graphstore

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"
#: Modules of graphstore.__all__ documented as a whole by a page, not name by name.
MODULE_PAGES = {"actor": "remote.md", "exceptions": "exceptions.md", "util": "util.md"}


def _text(page: Path) -> str:
    """A built page's visible text (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                             "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=110)
    took = time.monotonic() - started
    assert result.returncode == 0, (f"mkdocs build --strict failed after {took:.1f} s:\n"
                                    f"{result.stdout}\n{result.stderr}")
    return out


def test_strict_build_has_the_generated_reference(site):
    objects = _text(site / "reference" / "objects" / "index.html")
    # Signatures come from the code: the names of get's and put's parameters.
    assert re.search(r"get\(\s*refs", objects), objects[:2000]
    assert re.search(r"put\(\s*value", objects)
    assert "graphstore.ObjectRef" in objects
    cluster = _text(site / "reference" / "cluster" / "index.html")
    assert re.search(r"init\(\s*address", cluster)
    assert "ignore_reinit_error" in cluster
    assert "GetTimeoutError" in _text(site / "reference" / "exceptions" / "index.html")
    util = _text(site / "reference" / "util" / "index.html")
    for name in ("ActorPool", "Queue", "Executor", "Pool", "NodeAffinitySchedulingStrategy"):
        assert name in util


def test_cli_page_is_the_parsers_help(site):
    import argparse
    from graphstore.cli import build_parser
    page = _text(site / "reference" / "cli" / "index.html")
    assert "<!-- graphstore-cli -->" not in page
    parser = build_parser()
    subparsers = next(a for a in parser._actions
                      if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        assert f"graphstore {name}" in page, name
        for action in sub._actions:
            for option in action.option_strings:
                if action.help != argparse.SUPPRESS:
                    assert option in page, (name, option)


def test_api_md_is_gone_and_nothing_links_to_it():
    assert not (ROOT / "docs" / "api.md").exists()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        assert "api.md" not in path.read_text(), path


def test_every_public_name_is_on_a_reference_page():
    """Each name of ``graphstore.__all__`` has a ``::: graphstore.NAME`` block (or, for a
    module, a page of its own), so a new public name cannot go undocumented."""
    blocks = "\n".join(page.read_text() for page in sorted(REFERENCE.glob("*.md")))
    documented = set(re.findall(r"^::: graphstore\.(\w+)", blocks, re.MULTILINE))
    missing = [name for name in graphstore.__all__
               if name not in documented and name not in MODULE_PAGES]
    assert not missing, f"public names with no ::: block under docs/reference/: {missing}"
    for module, page in MODULE_PAGES.items():
        assert (REFERENCE / page).exists(), page
