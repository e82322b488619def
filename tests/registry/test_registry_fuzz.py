"""A registry file with any one thing wrong in it is refused with `ConfigError`s that
name the file and a line, never another exception (a traceback for the operator). The
mutations start from the shipped example registry: a value replaced by a random YAML
value, a key dropped, or an unknown key added, anywhere in the tree; and, as the text
the file holds, those of benchmarks/fuzz_registry.py."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from llmroute.errors import ConfigError
from llmroute.registry import parse_registry

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "registry.yaml"
BASE = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-10, max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "auto", "small", "large", "builtin:static", "0.5", "-1", "1e9", "x y"]),
    st.text(max_size=8),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(st.text(max_size=6), st.sampled_from(["model", "target"])), inner, max_size=3
        ),
    ),
    max_leaves=10,
)


def _places(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in the tree."""
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _places(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _places(value, (*path, index))
    return found


PLACES = _places(BASE)[1:]


def _mutated(place: tuple[Any, ...], kind: str, value: Any) -> Any:
    tree = copy.deepcopy(BASE)
    parent = tree
    for step in place[:-1]:
        parent = parent[step]
    last = place[-1]
    if kind == "replace":
        parent[last] = value
    elif kind == "drop":
        del parent[last]
    elif isinstance(parent, dict):
        parent[f"unknown_{last}"] = value
    return tree


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(PLACES),
    st.sampled_from(["replace", "drop", "add"]),
    _values,
)
def test_a_broken_registry_is_a_config_error_naming_file_and_line(
    place: tuple[Any, ...], kind: str, value: Any
) -> None:
    text = yaml.safe_dump(_mutated(place, kind, value), sort_keys=False, allow_unicode=True)
    try:
        parse_registry(text, source="registry.yaml")
    except ConfigError as exc:
        rendered = str(exc)
        assert rendered.startswith("registry.yaml"), rendered
        errors = getattr(exc, "errors", (exc,))
        assert all(error.line is not None for error in errors), rendered


def _fuzz_script() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz_registry.py"
    spec = importlib.util.spec_from_file_location("fuzz_registry", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_registry"] = module
    spec.loader.exec_module(module)
    return module


def test_mutated_shipped_registries_load_or_are_refused_at_a_line() -> None:
    """A bounded run of benchmarks/fuzz_registry.py (docs/benchmarks.md): the shipped
    registries' text mutated (aliases and alias bombs, merge keys, tabs, BOMs and other
    encodings, odd keys and values, pasted keys), loaded as `registry check` loads them."""
    fuzz = _fuzz_script()
    report = fuzz.fuzz(seed=7, cases=60, watchdog=False)
    assert report.outcomes["loaded"] and report.outcomes["refused"], report.outcomes
    assert not report.findings, [(c.mutations, p) for c, p in report.findings]


def test_the_extended_mutations_load_or_are_refused_at_a_line() -> None:
    """``--extended``: tags in every place, names of 200 to 5,000 characters and integers
    past Python's 4,300 digits (docs/benchmarks.md)."""
    fuzz = _fuzz_script()
    report = fuzz.fuzz(seed=7, cases=40, watchdog=False, extended=True)
    assert report.by_mutation.keys() >= set(fuzz.EXTENDED_MUTATIONS), report.by_mutation
    assert not report.findings, [(c.mutations, p) for c, p in report.findings]


def test_without_extended_the_cases_are_the_recorded_ones(monkeypatch: Any) -> None:
    """The recorded seeds' cases do not depend on the extended families: without
    ``--extended`` none is drawn, and no draw of the seed's generator is spent on them."""
    fuzz = _fuzz_script()
    before = [fuzz.make_case(1, n).data for n in range(30)]
    monkeypatch.setattr(fuzz, "EXTENDED_MUTATIONS", {"x_other": fuzz.m_truncate})
    assert [fuzz.make_case(1, n).data for n in range(30)] == before
    assert not any(m.startswith("x_") for n in range(30) for m in fuzz.make_case(1, n).mutations)
