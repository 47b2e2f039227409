"""HTML for Jupyter: the card every ``_repr_html_`` of graphstore draws, and its guard.

A card is a title, a state badge, a table of labelled values (a value may be a link), an
optional note (why what is shown may be stale) and an optional collapsible block of text
(a traceback). One ``tornado.template`` draws them all, autoescaped: names, tracebacks
and addresses come from user code or the network and are never trusted as HTML.

This module imports nothing of graphstore, so every layer may use it, ``exceptions``
included (``TaskError`` draws itself). What a card says is decided by its callers
(``graphstore.core.notebook_views``); ``never_raise`` keeps a failure to draw from
becoming an error in the notebook.
"""
from __future__ import annotations

import html
from typing import Callable, Iterable

from tornado.template import Template

#: Badge colours by state: done or alive, in progress, failed, and anything else.
_GREEN, _AMBER, _RED, _GREY = "#2e7d32", "#b26a00", "#c62828", "#757575"
_STATE_COLOURS = {
    "ready": _GREEN, "alive": _GREEN, "connected": _GREEN,
    "pending": _AMBER, "starting": _AMBER, "restarting": _AMBER,
    "error": _RED, "dead": _RED, "failed": _RED,
}

_CARD = Template("""\
<div class="graphstore-repr" style="font-size: 13px; line-height: 1.4; margin: 2px 0; \
padding: 4px 10px; border-left: 3px solid {{ colour }};">
<div style="font-weight: bold; margin-bottom: 4px;">{{ title }}
{% if state %}<span class="graphstore-state" style="font-weight: normal; color: #fff; \
background: {{ colour }}; border-radius: 3px; padding: 0 6px; margin-left: 6px;">\
{{ state }}</span>{% end %}</div>
{% if note %}<div class="graphstore-note" style="color: {{ note_colour }}; \
margin-bottom: 4px;">{{ note }}</div>{% end %}
<table style="border-collapse: collapse; margin: 0;">
{% for label, value, href in rows %}<tr>\
<th style="text-align: left; vertical-align: top; font-weight: normal; opacity: 0.75; \
padding: 1px 14px 1px 0;">{{ label }}</th>\
<td style="text-align: left; vertical-align: top; padding: 1px 0; font-family: monospace;">\
{% if href %}<a href="{{ href }}" target="_blank" rel="noopener noreferrer">{{ value }}</a>\
{% else %}{{ value }}{% end %}</td></tr>
{% end %}</table>
{% if details is not None %}<details{% if details_open %} open{% end %} \
style="margin-top: 4px;"><summary style="cursor: pointer;">{{ details_title }}</summary>\
<pre style="white-space: pre-wrap; margin: 4px 0; padding: 6px; overflow-x: auto; \
background: rgba(127, 127, 127, 0.12);">{{ details }}</pre></details>{% end %}
</div>""", name="graphstore-card", autoescape="xhtml_escape", whitespace="single")


def safe_href(url) -> str | None:
    """``url`` if it is an http(s) URL, else None: a link from the network must not
    run script (``javascript:``) when clicked."""
    if isinstance(url, str) and url.lower().startswith(("http://", "https://")):
        return url
    return None


def render_card(title: str, *, state: str | None = None,
                rows: Iterable[tuple] = (), note: str | None = None,
                details: str | None = None, details_title: str = "",
                details_open: bool = False) -> str:
    """The card's HTML. ``rows``: ``(label, value)`` or ``(label, value, href)``; rows
    whose value is None are left out, other values are shown as ``str(value)``."""
    table = []
    for row in rows:
        label, value = row[0], row[1]
        if value is None:
            continue
        href = safe_href(row[2]) if len(row) > 2 else None
        table.append((str(label), str(value), href))
    state_text = str(state) if state else None
    page = _CARD.generate(
        title=str(title), state=state_text,
        colour=_STATE_COLOURS.get(state_text or "", _GREY), note_colour=_AMBER,
        note=str(note) if note else None, rows=table,
        details=None if details is None else str(details),
        details_title=str(details_title), details_open=bool(details_open))
    return page.decode("utf-8")


def never_raise(draw: Callable[[], str], plain: Callable[[], str]) -> str:
    """``draw()``, or if that fails, the plain repr ``plain()`` with a line saying why
    there is no card: a repr that raises would show a traceback instead of the value."""
    try:
        return draw()
    except Exception as exc:
        try:
            text = plain()
        except Exception:
            text = "(no repr)"
        try:
            reason = f"{type(exc).__name__}: {exc}"
        except Exception:
            reason = type(exc).__name__
        return (f"<pre>{html.escape(text)}</pre><div style=\"opacity: 0.75;\">"
                f"graphstore could not draw this: {html.escape(reason)}</div>")
