"""Field paths (``routes[2].policy.fallback[0]``) and errors that carry them.

Validators deep inside the schema know *which* element is wrong (the third example, the
second regex) but pydantic only records the field they validate. `PathProblems` carries
the rest of the path, so the loader can point at the exact YAML line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from difflib import get_close_matches

__all__ = [
    "MAX_NAME_CHARS",
    "Path",
    "PathProblems",
    "Problem",
    "did_you_mean",
    "format_path",
    "shown_name",
]

Path = tuple[str | int, ...]
Problem = tuple[Path, str]
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
# Names go into response headers, metrics labels, log lines and the decision log: ASCII
# without line breaks, and short (an alias may be a fine-tuned model's id, ``ft:...``, of
# up to about 150 characters). An error names one whole, so that it can be found in the
# file; a longer key (a megabyte ``? key``) is cut past the limit.
MAX_NAME_CHARS = 256


class PathProblems(ValueError):
    """One or more problems, each at a path relative to where the validator runs."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(message for _, message in self.problems))

    @classmethod
    def raise_if_any(cls, problems: Sequence[Problem]) -> None:
        if problems:
            raise cls(problems)


def format_path(path: Iterable[str | int]) -> str:
    """``("routes", 2, "target")`` → ``routes[2].target``; odd keys are quoted, keys
    longer than a name may be cut (`shown_name`)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            part = part if len(part) <= MAX_NAME_CHARS else part[:MAX_NAME_CHARS] + "…"
            out += f".{part}" if out else part
        else:
            out += f"[{shown_name(part)}]"
    return out


def shown_name(name: str) -> str:
    """`name` quoted for an error, whole up to `MAX_NAME_CHARS` characters (escapes
    and all), else its first `MAX_NAME_CHARS` and ``…``."""
    return repr(name) if len(name) <= MAX_NAME_CHARS else f"{name[:MAX_NAME_CHARS]!r}…"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for a near miss, else an empty string."""
    close = get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
