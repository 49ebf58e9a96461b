"""``fedsim keys``: every config key with its default and meaning, read from where it is defined.

Shared keys and their meanings come from ``fedsim.config.base_config`` (the comment on each line); an
algorithm's section comes from its ``AlgorithmSpec.hparams``, with the comment beside each default in
the algorithm's source. ``docs/keys.md`` is this reference as Markdown (``fedsim keys --markdown``).
"""

import inspect
import re
import sys

from ml_collections import ConfigDict

from fedsim import algorithms
from fedsim import config as config_lib

SHARED_COMMENT = re.compile(r"^\s*c\.(\w+)\s*=[^#\n]*#\s*(.+)$", re.M)
SECTION_COMMENT = re.compile(r"^\s*\"(\w+)\":[^#\n]*#\s*(.+)$", re.M)


def _comments(pattern: re.Pattern, *sources: str) -> dict[str, str]:
    out = {}
    for source in sources:
        for key, text in pattern.findall(source):
            out.setdefault(key, text.strip())
    return out


def _section_sources(spec) -> list[str]:
    """The source of the module that builds ``spec``, then of the fedsim modules it uses."""
    module = sys.modules.get(getattr(spec.build, "__module__", ""), None)
    if module is None:
        return []
    used = {inspect.getmodule(v) for v in vars(module).values()} - {None, module}
    used = sorted((m for m in used if m.__name__.startswith("fedsim.")), key=lambda m: m.__name__)
    return [inspect.getsource(m) for m in (module, *used)]


def reference(config) -> list[tuple[str, str, object, str]]:
    """``(section, key, value, meaning)`` for every key of ``config``: shared ones first (section
    ``''``), then each algorithm section."""
    shared = _comments(SHARED_COMMENT, inspect.getsource(config_lib.base_config))
    rows = [("", k, v, shared.get(k, "")) for k, v in config.items() if not _is_section(k, v)]
    for key, value in config.items():
        if _is_section(key, value):
            spec = algorithms.get_spec(key if key in algorithms.ALGORITHMS else config.algorithm)
            meanings = _comments(SECTION_COMMENT, *_section_sources(spec))
            for k, v in value.items():
                mark = " *(traceable)*" if k in spec.traceable else ""
                rows.append((key, k, v, meanings.get(k, "") + mark))
    return rows


def _is_section(key: str, value) -> bool:
    return isinstance(value, ConfigDict) and key != "model_kwargs"


def as_text(rows) -> str:
    width = max(len(f"{s}.{k}" if s else k) for s, k, _, _ in rows)
    lines = []
    for section, key, value, meaning in rows:
        name = f"{section}.{key}" if section else key
        lines.append(f"{name:<{width}}  = {_shown(value)!s:<14}  {meaning}".rstrip())
    return "\n".join(lines) + "\n"


def as_markdown(rows) -> str:
    out = [
        "# Config keys",
        "",
        "Every key of `fedsim.config.base_config()` with its default (`fedsim keys --markdown`"
        " writes this page; `fedsim keys --config FILE.py[:ARG]` lists a config's own values). "
        "Override any of them with `--config.KEY=VALUE`; an algorithm's hyper-parameters live in "
        "its section, `--config.<algorithm>.KEY=VALUE` (e.g. `--config.fedprox.mu=0.1`).",
        "",
    ]
    for section in dict.fromkeys(s for s, *_ in rows):
        out += ["", f"## {'`' + section + '` section' if section else 'Shared keys'}", ""]
        out += ["| key | default | meaning |", "|---|---|---|"]
        for s, key, value, meaning in rows:
            if s == section:
                out.append(f"| `{key}` | `{_shown(value)}` | {meaning} |")
    return "\n".join(out) + "\n"


def _shown(value):
    return value.to_dict() if hasattr(value, "to_dict") else value
