"""An mkdocs hook that writes the command-line reference from the parser itself.

A page holding the line ``<!-- graphstore-cli -->`` gets, in its place, the ``--help``
text of ``graphstore`` and of each of its subcommands, rendered from
``graphstore.cli.build_parser()`` (which takes the scheduler's and the worker's options
from their services' ``cli`` modules), nested ones (``graphstore job submit``) under
their command, while the site builds, so the page cannot drift
from the code. Wrapping is fixed at 88 columns, whatever the terminal.
"""
from __future__ import annotations

import argparse
import os

MARKER = "<!-- graphstore-cli -->"
WIDTH = 88


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand, in the parser's order.

    argparse has no public accessor for its subparsers: the ``_SubParsersAction`` among
    ``parser._actions`` is the documented way tools such as sphinx-argparse reach them.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            return [(name, helps.get(name) or "", sub)
                    for name, sub in action.choices.items()]
    return []


def _help(parser: argparse.ArgumentParser) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        return parser.format_help().rstrip()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def render_cli_reference() -> str:
    """The Markdown of every command's help: a section per subcommand."""
    from graphstore.cli import build_parser
    parser = build_parser()
    parts = ["## `graphstore`", "", "```text", _help(parser), "```", ""]
    def add(prog: str, summary: str, sub: argparse.ArgumentParser, level: int) -> None:
        parts.extend([f"{'#' * level} `{prog}`", ""])
        if summary:
            parts.extend([summary[:1].upper() + summary[1:] + ".", ""])
        parts.extend(["```text", _help(sub), "```", ""])
        for name, child_summary, child in _subcommands(sub):   # graphstore job submit
            add(f"{prog} {name}", child_summary, child, level + 1)

    for name, summary, sub in _subcommands(parser):
        add(f"graphstore {name}", summary, sub, 2)
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001
    if MARKER in markdown:
        return markdown.replace(MARKER, render_cli_reference())
    return markdown
