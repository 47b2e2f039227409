"""What ``graphstore config`` shows: every effective setting, its value and its source,
with secrets (spill storage credentials) masked, as a table or as JSON."""
from __future__ import annotations

import json
from collections.abc import Mapping

from graphstore.core.config import Setting
from graphstore.core.config_file import ConfigFile

#: What a masked secret is shown as.
MASK = "********"

#: Parts of an option name that mark its value a secret (s3fs's ``key``, ``secret``,
#: ``token``, botocore's ``aws_secret_access_key``, a ``password`` ...).
_SECRET_WORDS = ("secret", "token", "password", "passwd", "credential")


def is_secret_name(name: str) -> bool:
    """Whether an option called ``name`` holds a secret to mask."""
    lowered = str(name).lower()
    return (lowered == "key" or lowered.endswith("_key") or "access_key" in lowered
            or any(word in lowered for word in _SECRET_WORDS))


def mask_secrets(value):
    """``value`` with the values of secret-named keys replaced by ``MASK``, at any depth
    of nested mappings and lists (the setting's own value is never changed)."""
    if isinstance(value, Mapping):
        return {k: MASK if is_secret_name(k) and v not in (None, "") else mask_secrets(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_secrets(v) for v in value]
    return value


def settings_report(settings: Mapping[str, Setting], files: list[ConfigFile]) -> dict:
    """The JSON form: the files searched (and whether each exists) and each setting's
    value (secrets masked), kind of source and source."""
    return {
        "files": [{"path": str(f.path), "exists": f.path.exists()} for f in files],
        "settings": {name: {"value": mask_secrets(s.value), "kind": s.kind,
                            "source": s.source}
                     for name, s in settings.items()},
    }


def format_settings(report: dict) -> str:
    """The table ``graphstore config`` prints: one line per setting, then the files."""
    rows = [(name, _shown(entry["value"]), entry["source"])
            for name, entry in report["settings"].items()]
    name_width = max(len("setting"), *(len(r[0]) for r in rows))
    value_width = min(40, max(len("value"), *(len(r[1]) for r in rows)))
    lines = [f"{'setting':<{name_width}}  {'value':<{value_width}}  source"]
    for name, value, source in rows:
        lines.append(f"{name:<{name_width}}  {value:<{value_width}}  {source}")
    lines.append("")
    lines.append("configuration files (lowest precedence first):")
    for file in report["files"]:
        lines.append(f"  {file['path']}{'' if file['exists'] else '  (not found)'}")
    return "\n".join(lines)


def _shown(value) -> str:
    """A value as the table shows it: strings quoted only when empty."""
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)
