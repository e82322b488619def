"""`llmroute registry diff`: what a registry change would do to real traffic before it
ships. The same requests (exported from the decision log, or any prompts) are routed by
both registries, offline, and compared: which routes and models they move between, how
each model's share changes, what safety and the reasoning gate would now do differently,
and what the requests would cost at each registry's prices. No labels are needed; that
is what makes it usable on every change (`llmroute eval --compare` measures accuracy
where labelled data exists)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmroute.decide import Router
from llmroute.decision import Decision
from llmroute.errors import DataError
from llmroute.evaluate.run import predicted_route
from llmroute.jsonl import is_jsonl, read_jsonl, read_lines
from llmroute.layers.pin import PIN_LAYER
from llmroute.registry.schema import Registry

__all__ = [
    "BLOCKED",
    "Move",
    "RegistryDiff",
    "Traffic",
    "TrafficFile",
    "diff_registries",
    "read_traffic",
]

BLOCKED = "(blocked)"
"""What a request the safety layer blocks counts as in the model shares."""
_CHUNK = 256  # texts per encoder call
_EXAMPLE_CHARS = 80


@dataclass(frozen=True, slots=True)
class Traffic:
    """One request to replay: the text the router sees and, when the log had them, the
    tokens it was answered with (what the cost projection prices)."""

    text: str
    tokens_in: int | None = None
    tokens_out: int | None = None


@dataclass(frozen=True, slots=True)
class TrafficFile:
    """The requests of a file, and the rows that cannot be replayed: exported requests
    whose text the log did not keep (``telemetry.prompts: hash``, blocked requests), and
    those the client pinned to a route or model (routing did not choose for them)."""

    requests: list[Traffic]
    without_text: int = 0
    pinned: int = 0


def read_traffic(path: Path) -> TrafficFile:
    """Plain text, one request a line; or JSONL with ``prompt`` (or ``text``) and,
    optionally, ``tokens_in`` / ``tokens_out``: `llmroute export` writes such lines
    (standard input, ``-``, is read as JSONL)."""
    file = str(path)
    if not is_jsonl(path):
        lines = read_lines(path, what="the requests")
        requests = [Traffic(line) for line in lines if line.strip()]
        if not requests:
            raise DataError("no requests in the file", file=file)
        return TrafficFile(requests)
    rows = read_jsonl(path, _row, what="the requests", empty="no requests in the file")
    return TrafficFile(
        [r for r in rows if isinstance(r, Traffic)],
        without_text=sum(r == "no text" for r in rows),
        pinned=sum(r == "pinned" for r in rows),
    )


def _row(record: dict[str, Any], file: str, line: int) -> Traffic | str:
    if "prompt" not in record and "text" not in record:
        raise DataError("needs a 'prompt' (or 'text') string", file=file, line=line)
    text = record.get("prompt", record.get("text"))
    if record.get("layer") == PIN_LAYER:
        return "pinned"
    if text is None:
        return "no text"
    if not isinstance(text, str) or not text.strip():
        raise DataError("'prompt' must be a non-empty string", file=file, line=line)
    tokens = []
    for key in ("tokens_in", "tokens_out"):
        value = record.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise DataError(f"{key!r} must be a whole number >= 0", file=file, line=line)
        tokens.append(value)
    return Traffic(text, tokens[0], tokens[1])


@dataclass(frozen=True, slots=True)
class Move:
    """Requests that went `before` under the base registry and go `after` under the new."""

    before: str
    after: str
    count: int
    examples: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.before,
            "to": self.after,
            "count": self.count,
            "examples": list(self.examples),
        }


@dataclass(frozen=True, slots=True)
class RegistryDiff:
    n: int
    route_moves: tuple[Move, ...]
    model_moves: tuple[Move, ...]
    models_before: dict[str, int]
    models_after: dict[str, int]
    safety_before: dict[str, int]  # action -> requests (``none``: no safety layer)
    safety_after: dict[str, int]
    thinking_before: int  # requests the reasoning gate sends to extended thinking
    thinking_after: int
    priced: int  # requests with token counts, which the costs cover
    cost_before_usd: float
    cost_after_usd: float

    @property
    def route_changed(self) -> int:
        return sum(m.count for m in self.route_moves)

    @property
    def model_changed(self) -> int:
        return sum(m.count for m in self.model_moves)

    @property
    def model_changed_share(self) -> float:
        return self._share(self.model_changed)

    def _share(self, count: int) -> float:
        return count / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "route_changed": self.route_changed,
            "route_changed_share": self._share(self.route_changed),
            "model_changed": self.model_changed,
            "model_changed_share": self.model_changed_share,
            "route_moves": [m.to_dict() for m in self.route_moves],
            "model_moves": [m.to_dict() for m in self.model_moves],
            "models": {
                name: {
                    "before": self.models_before.get(name, 0),
                    "after": self.models_after.get(name, 0),
                }
                for name in _union(self.models_before, self.models_after)
            },
            "safety": {
                action: {
                    "before": self.safety_before.get(action, 0),
                    "after": self.safety_after.get(action, 0),
                }
                for action in _union(self.safety_before, self.safety_after)
            },
            "thinking": {"before": self.thinking_before, "after": self.thinking_after},
            "priced": self.priced,
            "cost_before_usd": self.cost_before_usd if self.priced else None,
            "cost_after_usd": self.cost_after_usd if self.priced else None,
        }


def diff_registries(
    base: Router, new: Router, traffic: Sequence[Traffic], *, examples: int = 2
) -> RegistryDiff:
    """Route every request of `traffic` with both routers (batched encoder calls; the
    offline layers only, as `llmroute route --no-llm`) and compare."""
    texts = [t.text for t in traffic]
    before = _decide_all(base, texts)
    after = _decide_all(new, texts)
    route_moves: dict[tuple[str, str], list[str]] = defaultdict(list)
    model_moves: dict[tuple[str, str], list[str]] = defaultdict(list)
    cost_before = cost_after = 0.0
    priced = 0
    for request, b, a in zip(traffic, before, after, strict=True):
        if predicted_route(b) != predicted_route(a):
            route_moves[(predicted_route(b), predicted_route(a))].append(request.text)
        if _served(b) != _served(a):
            model_moves[(_served(b), _served(a))].append(request.text)
        if request.tokens_in is not None and request.tokens_out is not None:
            priced += 1
            cost_before += _cost(base.loaded.registry, b, request)
            cost_after += _cost(new.loaded.registry, a, request)
    return RegistryDiff(
        n=len(traffic),
        route_moves=_moves(route_moves, examples),
        model_moves=_moves(model_moves, examples),
        models_before=_counted(_served(d) for d in before),
        models_after=_counted(_served(d) for d in after),
        safety_before=_counted(_action(d) for d in before),
        safety_after=_counted(_action(d) for d in after),
        thinking_before=sum(_thinks(d) for d in before),
        thinking_after=sum(_thinks(d) for d in after),
        priced=priced,
        cost_before_usd=cost_before,
        cost_after_usd=cost_after,
    )


def _decide_all(router: Router, texts: Sequence[str]) -> list[Decision]:
    out: list[Decision] = []
    for start in range(0, len(texts), _CHUNK):
        out.extend(router.decide_many(texts[start : start + _CHUNK]))
    return out


def _served(decision: Decision) -> str:
    return BLOCKED if decision.blocked else decision.model


def _action(decision: Decision) -> str:
    return "none" if decision.safety is None else decision.safety.action


def _thinks(decision: Decision) -> bool:
    return decision.reasoning is not None and decision.reasoning.needed


def _cost(registry: Registry, decision: Decision, request: Traffic) -> float:
    """The request's logged tokens at the price of the model this registry sends it to
    (nothing when it is blocked). The answer's length is the logged one: another model
    would answer at another length, so this is a projection, not a measurement."""
    model = registry.models.get(decision.model)
    if decision.blocked or model is None:
        return 0.0
    tokens_in, tokens_out = request.tokens_in or 0, request.tokens_out or 0
    return (tokens_in * model.price.input + tokens_out * model.price.output) / 1e6


def _moves(moves: dict[tuple[str, str], list[str]], examples: int) -> tuple[Move, ...]:
    ordered = sorted(moves.items(), key=lambda item: (-len(item[1]), item[0]))
    return tuple(
        Move(before, after, len(texts), tuple(_clip(t) for t in texts[:examples]))
        for (before, after), texts in ordered
    )


def _clip(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXAMPLE_CHARS else flat[: _EXAMPLE_CHARS - 1] + "…"


def _counted(names: Iterable[str]) -> dict[str, int]:
    counts = Counter(names)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _union(first: dict[str, int], second: dict[str, int]) -> list[str]:
    return list(dict.fromkeys([*first, *second]))
