"""The documentation site (mkdocs.yml, docs/): it builds with ``mkdocs build --strict``
(no broken link or anchor, no unresolved reference, no warning), its API reference is
generated from the code and covers every public name, and its command-line page is
rendered from ``graphstore.cli.build_parser()``.

The build runs in a subprocess, as a user's ``mkdocs build --strict`` would: pytest's
warnings-are-errors filter is for graphstore's code, not for mkdocs' plugins.
"""
from __future__ import annotations

import ast
import html
import inspect
import os
import re
import subprocess
import sys
import textwrap
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


# -- docstrings ----------------------------------------------------------------------
# Every public callable has a docstring in Google style (mkdocs.yml: docstring_style:
# google): a ``Returns:`` (or ``Yields:``) section when it returns or yields a value and a
# ``Raises:`` section when its body raises, as the reference renders them.

def _public_api() -> dict[str, object]:
    """Qualified name -> object, for everything the reference documents."""
    import graphstore.actor
    import graphstore.dask
    import graphstore.deploy.slurm
    import graphstore.exceptions
    import graphstore.job_submission
    import graphstore.remote_function
    import graphstore.runtime_context
    import graphstore.session
    import graphstore.util
    import graphstore.util.joblib
    import graphstore.util.multiprocessing
    import graphstore.util.queue
    import graphstore.util.scheduling_strategies
    modules = [graphstore, graphstore.actor, graphstore.exceptions, graphstore.util,
               graphstore.util.queue, graphstore.util.multiprocessing,
               graphstore.util.joblib, graphstore.util.scheduling_strategies,
               graphstore.dask, graphstore.deploy.slurm, graphstore.job_submission]
    found: dict[str, object] = {}
    for module in modules:
        names = getattr(module, "__all__", None) or [
            n for n, v in vars(module).items() if not n.startswith("_")
            and getattr(v, "__module__", None) == module.__name__]
        for name in names:
            value = getattr(module, name)
            if inspect.ismodule(value) or not getattr(
                    value, "__module__", "graphstore").startswith("graphstore"):
                continue            # a module, or another library's object re-exported
            found[f"{module.__name__}.{name}"] = value
    # What the public calls return, documented on their pages.
    for cls in (graphstore.remote_function.RemoteFunction, graphstore.actor.ActorClass,
                graphstore.actor.ActorMethod, graphstore.session.ClusterContext,
                graphstore.runtime_context.RuntimeContext):
        found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    members: dict[str, object] = {}
    for qualname, value in found.items():
        if inspect.isclass(value) and value.__module__.startswith("graphstore"):
            for name, member in vars(value).items():
                if name.startswith("_"):
                    continue
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if inspect.isfunction(member) or isinstance(member, property):
                    members[f"{qualname}.{name}"] = member
    found.update(members)
    return found


def _body_facts(function) -> tuple[bool, bool]:
    """(returns or yields a value, raises) from the function's own body, nested
    functions and classes left out."""
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        return False, False
    tree = ast.parse(source).body[0]
    returns = raises = False
    stack = list(ast.iter_child_nodes(tree))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                             ast.ClassDef)):
            continue
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            returns = True
        elif isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            returns = True
        elif isinstance(node, ast.Raise) and node.exc is not None:
            raises = True
        stack.extend(ast.iter_child_nodes(node))
    return returns, raises


def _docstring_problems() -> list[str]:
    problems = []
    seen: set[int] = set()
    for qualname, value in sorted(_public_api().items()):
        if id(value) in seen:       # graphstore.kill is graphstore.actor.kill
            continue
        seen.add(id(value))
        function = value.fget if isinstance(value, property) else value
        doc = inspect.getdoc(function) if inspect.isclass(function) else function.__doc__
        if inspect.isclass(function) and function.__doc__ is None:
            doc = None
        if not doc or not doc.strip():
            problems.append(f"{qualname}: no docstring")
            continue
        if inspect.isclass(function):
            # The reference shows __init__'s parameters with the class (mkdocs.yml:
            # merge_init_into_class), so the class's docstring says what it raises.
            init = vars(function).get("__init__")
            if (init is not None and _body_facts(init)[1]
                    and not re.search(r"^\s*Raises:", doc, re.MULTILINE)):
                problems.append(f"{qualname}: its constructor raises, no Raises: section")
            continue
        if isinstance(value, property) or not inspect.isfunction(function):
            continue
        returns, raises = _body_facts(function)
        if inspect.signature(function).return_annotation in (None, "None"):
            returns = False             # `return self._other()` of a None
        if returns and not re.search(r"^\s*(Returns|Yields):", doc, re.MULTILINE):
            problems.append(f"{qualname}: returns a value, no Returns: section")
        if raises and not re.search(r"^\s*Raises:", doc, re.MULTILINE):
            problems.append(f"{qualname}: raises, no Raises: section")
    return problems


def test_every_public_callable_states_its_contract():
    problems = _docstring_problems()
    assert not problems, "\n".join(["docstrings to write or complete:", *problems])
