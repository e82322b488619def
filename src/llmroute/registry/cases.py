"""Routing cases: requests and what a registry must decide for them, in a YAML file kept
beside the registry and run by ``llmroute registry test`` (docs/registry.md#routing-cases).

Where ``llmroute eval`` measures accuracy on a labelled dataset, cases pin down policy:
this tenant's header goes to that model, a prompt with tools is decided by that rule,
card numbers are redacted, a proof gets extended reasoning. A case names the request (a
prompt, or an OpenAI chat body, with optional headers) and expectations on the Decision;
the names it expects are checked against the registry when the file is loaded, so a
typo is an error naming file and line, not a case that can never pass.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import Field, ValidationError, field_validator, model_validator

from llmroute.decision import Decision
from llmroute.registry._errors import (
    ConfigErrors,
    problems_from,
    to_config_errors,
    yaml_problems,
)
from llmroute.registry._paths import Path, PathProblems, did_you_mean
from llmroute.registry._yaml import Document
from llmroute.registry.loader import keep_as_written, parse_document, read_text
from llmroute.registry.schema import Registry, Text, Unit, _Frozen

__all__ = [
    "Case",
    "Cases",
    "Expect",
    "LoadedCases",
    "load_cases",
    "names_of",
    "parse_cases",
    "render_cases",
]

Names = str | tuple[str, ...]  # one name, or any of several

LAYERS = ("rules", "intent", "difficulty", "default", "pinned", "llm_router")


def names_of(value: Names | None) -> tuple[str, ...]:
    """An expectation's names: one, several, or none when unset."""
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else value


class Expect(_Frozen):
    """What the Decision must be; every key given must hold. `route`, `model` and
    `layer` take a name or a list of names (any of them)."""

    route: Names | None = None
    model: Names | None = None
    layer: Names | None = None
    rule: str | None = None  # the rule that decided (layer `rules`)
    safety: Literal["allow", "redact", "route", "block"] | None = None
    reasoning: bool | None = None  # whether the reasoning gate asked for extended thinking
    min_confidence: Unit | None = None
    chain: tuple[str, ...] | None = Field(default=None, min_length=1)  # models, in order

    @field_validator("route", "model", "layer", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _something(self) -> Self:
        if all(getattr(self, name) is None for name in type(self).model_fields):
            keys = ", ".join(type(self).model_fields)
            raise PathProblems([((), f"expect needs at least one key ({keys})")])
        for name in names_of(self.layer):
            if name not in LAYERS:
                problem = f"unknown layer {name!r}{did_you_mean(name, LAYERS)}"
                raise PathProblems([(("layer",), f"{problem}; layers: {', '.join(LAYERS)}")])
        return self


class Case(_Frozen):
    """One request (`prompt`, or `request`: an OpenAI chat body) and its expectations."""

    name: str | None = Field(default=None, min_length=1)
    prompt: str | None = Field(default=None, min_length=1)
    request: dict[str, Any] | None = None
    headers: dict[str, Text] | None = None
    expect: Expect

    @model_validator(mode="after")
    def _one_request(self) -> Self:
        if (self.prompt is None) == (self.request is None):
            raise PathProblems([((), "give exactly one of 'prompt' or 'request' (a chat body)")])
        return self


class Cases(_Frozen):
    """The file: a list of cases under `cases`."""

    cases: tuple[Case, ...] = Field(min_length=1)


@dataclass(frozen=True)
class LoadedCases:
    """Validated cases, with the line each starts on (for reports)."""

    cases: tuple[Case, ...]
    lines: tuple[int, ...]
    source: str

    def __iter__(self) -> Iterator[tuple[Case, int]]:
        return iter(zip(self.cases, self.lines, strict=True))

    def label(self, index: int) -> str:
        """A case's name, or where it is (``cases.yaml:12``) when it has none."""
        case = self.cases[index]
        return case.name or f"{self.source}:{self.lines[index]}"


def load_cases(path: str | os.PathLike[str], registry: Registry) -> LoadedCases:
    """Read and validate a cases file against `registry`; any problem raises
    `ConfigError` (every problem found, each naming file, line and field)."""
    source = os.fspath(path)
    return parse_cases(read_text(source, "the cases file"), registry, source=source)


def parse_cases(text: str, registry: Registry, *, source: str = "<string>") -> LoadedCases:
    """`load_cases` for YAML given as text."""
    document = parse_document(
        text,
        source,
        empty="the cases file is empty; it needs 'cases:', a list of requests and expectations",
        top="a mapping with 'cases'",
        root=Cases,
    )
    listed = document.data.get("cases")
    keep_as_written(  # as the registry's rules keep them (`keep_as_written`)
        document,
        [
            path
            for i in range(len(listed) if isinstance(listed, list) else 0)
            for path in (("cases", i, "headers"), ("cases", i, "request", "metadata"))
        ],
    )
    problems = yaml_problems(document)
    cases: Cases | None = None
    try:
        cases = Cases.model_validate(document.data)
    except ValidationError as exc:
        problems.extend(problems_from(exc, Cases))
    if cases is not None:
        problems.extend((path, message, False) for path, message in _mismatches(cases, registry))
    if problems or cases is None:
        raise ConfigErrors(to_config_errors(problems, document, source))
    lines = tuple(_line(document, ("cases", i)) for i in range(len(cases.cases)))
    return LoadedCases(cases.cases, lines, source)


def _line(document: Document, path: Path) -> int:
    return document.value_lines.get(path, 0)


def _mismatches(cases: Cases, registry: Registry) -> Iterator[tuple[Path, str]]:
    """Expected routes, models and rules the registry does not have, and expectations
    on a layer it does not run (a case that could never pass)."""
    known = {
        # a rule that targets a model decides route "rule:NAME" (what `record` writes)
        "route": [
            "default",
            *(r.name for r in registry.routes),
            *(f"rule:{r.name}" for r in registry.rules if r.target is not None),
        ],
        "model": list(registry.models),
        "rule": [r.name for r in registry.rules],
    }
    for i, case in enumerate(cases.cases):
        for field, key, names in (
            ("route", "route", names_of(case.expect.route)),
            ("model", "model", names_of(case.expect.model)),
            ("rule", "rule", names_of(case.expect.rule)),
            ("chain", "model", case.expect.chain or ()),
        ):
            for j, name in enumerate(names):
                if name not in known[key]:
                    at: Path = ("cases", i, "expect", field)
                    if not isinstance(getattr(case.expect, field), str):
                        at = (*at, j)
                    choices = ", ".join(known[key]) or "none"
                    yield (
                        at,
                        (
                            f"unknown {key} {name!r}{did_you_mean(name, known[key])}; "
                            f"the registry's {key}s: {choices}"
                        ),
                    )
        expect = case.expect
        if expect.safety not in (None, "allow") and registry.safety is None:
            yield (
                ("cases", i, "expect", "safety"),
                (
                    f"the registry has no safety section, so the action is always allow, not "
                    f"{expect.safety}"
                ),
            )
        if expect.reasoning and registry.reasoning is None:
            yield (
                ("cases", i, "expect", "reasoning"),
                (
                    "the registry has no reasoning section: no request is ever found to need "
                    "extended thinking"
                ),
            )


def render_cases(header: str, prompts: Sequence[str], decisions: Sequence[Decision]) -> str:
    """A cases file expecting `decisions` for `prompts`: route and model always, and the
    rule, the safety action and extended reasoning where they acted. Strings are written
    as JSON (valid YAML double-quoted scalars), so any prompt round-trips."""
    lines = [f"# {header}", "cases:"]
    for prompt, decision in zip(prompts, decisions, strict=True):
        expect: dict[str, Any] = {"route": decision.route, "model": decision.model}
        if decision.layer == "rules" and (rule := _RULE.match(decision.reason)) is not None:
            expect["rule"] = rule.group(1)
        if decision.safety is not None and decision.safety.action != "allow":
            expect["safety"] = decision.safety.action
        if decision.reasoning is not None and decision.reasoning.needed:
            expect["reasoning"] = True
        pairs = ", ".join(f"{key}: {json.dumps(value)}" for key, value in expect.items())
        lines += [
            f"  - prompt: {json.dumps(prompt, ensure_ascii=False)}",
            f"    expect: {{{pairs}}}",
        ]
    return "\n".join(lines) + "\n"


_RULE = re.compile(r"rule '([^']+)'")
