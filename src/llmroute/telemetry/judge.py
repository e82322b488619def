"""Judges for shadow routing: was the routed model's answer as good as the reference's?

Two judges, chosen by the registry's ``shadow.judge``:

- `ExactJudge` (``kind: exact``), for tasks with one right answer (maths, multiple
  choice, short facts): both answers are reduced to a final answer (`final_answer`) and
  compared. No model is called.
- `ModelJudge` (``kind: model``): a pool model is shown the user's request and both
  answers, in a random order, and asked for a verdict as one JSON object
  (`JUDGE_PROMPT`). A tie counts for the routed model.

A judge never raises: a failure (an upstream error, an unparseable verdict) is a
`Judgement` with ``routed_ok=None`` and a short `error`, which never quotes the answers
or the request.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal, Protocol

from llmroute.decision import Decision, new_decision_id
from llmroute.dispatch.plan import Plan
from llmroute.errors import (
    AttemptText,
    ConfigError,
    LlmrouteError,
    UpstreamRejected,
    error_text,
)
from llmroute.registry.schema import JudgeSettings, RoutePolicy
from llmroute.untrusted_json import loads

if TYPE_CHECKING:
    from llmroute.dispatch.dispatcher import Dispatcher

__all__ = [
    "EXACT_MAX_CHARS",
    "JUDGE_MAX_TOKENS",
    "JUDGE_PROMPT",
    "ExactJudge",
    "Judge",
    "Judgement",
    "ModelJudge",
    "final_answer",
    "judge_from_settings",
    "parse_verdict",
    "request_text",
]

_ERROR_CHARS = 200  # a judge_error is a short reason, never content


@dataclass(frozen=True, slots=True)
class Judgement:
    """A judge's verdict on one shadow pair. `routed_ok` is True when the routed answer
    is at least as good as the reference, None when the judge could not tell (`error`
    says why). `score` is 1.0/0.0 alongside `routed_ok` (None with it). `extra` holds
    small, content-free details for ``ShadowRecord.extra``."""

    judge: str
    routed_ok: bool | None
    score: float | None = None
    error: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class Judge(Protocol):
    """Compares a routed answer with the reference model's answer to the same request.
    `request` is the chat body that was sent upstream (already redacted)."""

    @property
    def name(self) -> str:
        """How `ShadowRecord.judge` names this judge: ``exact`` or ``model:<name>``."""
        ...

    @property
    def max_chars(self) -> int:
        """The most of an answer it reads: a stream's answer is read no further (and one
        character past, which tells it was cut: `StreamedAnswer`)."""
        ...

    async def judge(
        self, request: Mapping[str, Any], routed: str | None, reference: str | None
    ) -> Judgement: ...


def _missing(name: str, routed: str | None, reference: str | None, most: int) -> Judgement | None:
    """No verdict on an answer blank as far as a judge reads (`most`, one character
    past): a stream's is read no further, and must be judged as the whole answer."""
    if routed is None or not routed[: most + 1].strip():
        return Judgement(name, None, error="no routed answer to judge")
    if reference is None or not reference[: most + 1].strip():
        return Judgement(name, None, error="no reference answer to judge")
    return None


# -- exact ---------------------------------------------------------------------------------

_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_GSM8K_RE = re.compile(r"####\s*\$?\s*(" + _NUMBER + ")")
_ANSWER_NUMBER_RE = re.compile(
    r"(?i:\banswer\b)(?:\s+(?i:is))?\s*[:=]?\s*\**\s*\$?\s*(" + _NUMBER + ")"
)
# "Answer: (B)", "The answer is B.", "answer: c)" — one letter A-J, not the start of a word
_CHOICE_RE = re.compile(
    r"(?i:\banswer\b)(?:\s+(?i:is))?\s*[:=]?\s*\**\s*"
    r"(?:\(([A-Ja-j])\)|([A-Ja-j])(?![\w'])(?!\s+[a-z]))"
)
_BOXED = "\\boxed{"
_PUNCT_RE = re.compile(r"[^\w\s]+")
_SPACE_RE = re.compile(r"\s+")


def _number(text: str) -> str:
    """A number in canonical form: commas gone, ``18.00`` → ``18``, ``-0`` → ``0``."""
    raw = text.replace(",", "")
    try:
        value = Decimal(raw)
    except InvalidOperation:  # pragma: no cover - the regexes only match numbers
        return raw
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _normalised(text: str) -> str:
    """Lower-case, punctuation dropped, whitespace collapsed."""
    return _SPACE_RE.sub(" ", _PUNCT_RE.sub(" ", text.lower())).strip()


def _last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}``, braces balanced; None when absent."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth, i = 1, start + len(_BOXED)
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def _reduce(text: str) -> str:
    """A short answer (what a ``\\boxed{}`` holds): its number, else its normalised text."""
    numbers = _NUMBER_RE.findall(text)
    if len(numbers) == 1 and _NUMBER_RE.fullmatch(text.strip().strip("$").strip()):
        return _number(numbers[0])
    return _normalised(text)


def final_answer(text: str) -> str:
    """The final answer in `text`, in a canonical form, tried in this order:

    1. the last ``\\boxed{...}`` (its number, or its normalised text);
    2. GSM8K's ``#### 42``;
    3. a multiple-choice letter after "answer" (``Answer: (B)``, ``The answer is C.``),
       returned upper-case;
    4. the number after "answer" (``The answer is $1,200.``);
    5. the last number in the text (commas stripped, ``18.0`` → ``18``);
    6. else the whole text, lower-cased with punctuation and whitespace collapsed.
    """
    boxed = _last_boxed(text)
    if boxed is not None:
        return _reduce(boxed)
    for pattern in (_GSM8K_RE, _CHOICE_RE, _ANSWER_NUMBER_RE):
        matches = pattern.findall(text)
        if matches:
            last = matches[-1]
            if pattern is _CHOICE_RE:
                return "".join(last).upper()  # one of its two groups matched
            return _number(str(last))
    numbers = _NUMBER_RE.findall(text)
    if numbers:
        return _number(numbers[-1])
    return _normalised(text)


EXACT_MAX_CHARS = 100_000
"""The longest answer the exact judge judges. Its final answer is at its end, so one cut
shorter would be judged on a wrong one: a longer answer (a stream's is read no further)
gets no verdict. Far beyond a maths or multiple-choice answer; it also bounds the work of
`final_answer`'s regular expressions, on the event loop."""


class ExactJudge:
    """Routed ok when its final answer (`final_answer`) equals the reference's; no
    verdict when either answer is longer than `max_chars`."""

    name = "exact"
    max_chars = EXACT_MAX_CHARS

    async def judge(
        self, request: Mapping[str, Any], routed: str | None, reference: str | None
    ) -> Judgement:
        missing = _missing(self.name, routed, reference, self.max_chars)
        if missing is not None:
            return missing
        assert routed is not None and reference is not None
        for which, text in (("routed", routed), ("reference", reference)):
            if len(text) > self.max_chars:
                error = f"the {which} answer is longer than {self.max_chars:,} characters"
                return Judgement(self.name, None, error=error)
        mine, theirs = final_answer(routed), final_answer(reference)
        ok = mine == theirs
        extra = {"routed_final": mine[:100], "reference_final": theirs[:100]}
        return Judgement(self.name, ok, 1.0 if ok else 0.0, extra=extra)


# -- model ---------------------------------------------------------------------------------

JUDGE_PROMPT = """\
You are an impartial judge. Compare two assistant answers to the same user request and \
decide which one is better: more correct, more helpful and more complete. Ignore length \
and style unless they affect usefulness, and ignore the order in which the answers appear.

[User request]
{request}

[Answer A]
{answer_a}

[Answer B]
{answer_b}

Reply with one JSON object and nothing else: {{"verdict": "A"}} if answer A is better, \
{{"verdict": "B"}} if answer B is better, or {{"verdict": "tie"}} if they are about \
equally good (for example, both correct or both wrong)."""
"""The one message a `ModelJudge` sends (as the user turn), formatted with `request`
(the conversation as ``role: text`` lines, its last `max_chars` characters), `answer_a`
and `answer_b` (each cut to `max_chars`).

Which slot holds the routed answer and which the reference is drawn at random per
judgement (a fair coin), to cancel the judge's position bias; the verdict is mapped back
to ``routed`` / ``reference`` / ``tie``. The routed answer is ok when the verdict is its
slot or ``tie`` (at least as good). The reply must be exactly one JSON object with a
``verdict`` of ``"A"``, ``"B"`` or ``"tie"`` (case-insensitive; a surrounding
```` ```json ```` fence is tolerated); anything else is a judge failure. The request is
sent with ``temperature: 0``, ``max_tokens``: `JUDGE_MAX_TOKENS` and
``response_format: {"type": "json_object"}``; when a provider refuses that with a 4xx,
the same request goes again without it, and from then on this judge asks without it."""

JUDGE_MAX_TOKENS = 32
_FENCE_RE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_TRUNCATED = " …[truncated]"
Slot = Literal["A", "B"]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + _TRUNCATED


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type", "text") == "text"
        )
    return ""


def request_text(body: Mapping[str, Any], max_chars: int) -> str:
    """The conversation as ``role: text`` lines, keeping its last `max_chars` characters
    (the latest turns matter most)."""
    lines = []
    for message in body.get("messages") or ():
        if isinstance(message, Mapping):
            role = str(message.get("role", "user"))
            lines.append(f"{role}: {_content_text(message.get('content'))}")
    text = "\n".join(lines)
    return text if len(text) <= max_chars else "…" + text[-max_chars:]


def parse_verdict(content: str) -> Literal["A", "B", "tie"] | None:
    """The verdict of a judge reply, or None when the reply is not exactly one JSON
    object with ``verdict`` ``A``, ``B`` or ``tie``."""
    text = content.strip()
    fenced = _FENCE_RE.match(text)
    if fenced is not None:
        text = fenced.group(1)
    try:
        data = loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    verdict = data.get("verdict")
    if not isinstance(verdict, str):
        return None
    value = verdict.strip().lower()
    if value == "a":
        return "A"
    if value == "b":
        return "B"
    return "tie" if value == "tie" else None


def _judge_plan(model: str) -> Plan:
    """A plan that sends to `model` alone, with no safety or reasoning changes (the body
    is already redacted) and no retries: a judgement is a sample, cheap to lose."""
    decision = Decision(
        id=new_decision_id(),
        route="shadow",
        model=model,
        layer="shadow-judge",
        confidence=1.0,
        margin=None,
        reason="shadow judge",
        registry_version="",
        signals=(),
        encode_us=0.0,
        total_us=0.0,
    )
    return Plan(decision, (model,), RoutePolicy(retries=0))


class ModelJudge:
    """Asks the pool model `model`, through `dispatcher`, which answer is better
    (`JUDGE_PROMPT`); each answer is cut to `max_chars`. `rng` draws the answer order."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        model: str,
        max_chars: int = 6000,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self.model = model
        self.max_chars = max_chars
        self._rng = rng or random.Random()
        self._json_mode = True  # off after a provider refuses response_format

    @property
    def name(self) -> str:
        return f"model:{self.model}"

    def prompt(self, request: Mapping[str, Any], routed: str, reference: str, slot: Slot) -> str:
        """The judge's message with the routed answer in `slot`."""
        a, b = (routed, reference) if slot == "A" else (reference, routed)
        return JUDGE_PROMPT.format(
            request=request_text(request, self.max_chars),
            answer_a=_clip(a, self.max_chars),
            answer_b=_clip(b, self.max_chars),
        )

    async def judge(
        self, request: Mapping[str, Any], routed: str | None, reference: str | None
    ) -> Judgement:
        missing = _missing(self.name, routed, reference, self.max_chars)
        if missing is not None:
            return missing
        assert routed is not None and reference is not None
        slot: Slot = "A" if self._rng.random() < 0.5 else "B"
        started = time.perf_counter()
        try:
            content, cost = await self._ask(self.prompt(request, routed, reference, slot))
        except LlmrouteError as exc:
            said = error_text(exc)  # the upstream's words: kept as telemetry.prompts says
            error = AttemptText(
                _short(f"judge call failed: {said}"), _short(f"judge call failed: {said.outline}")
            )
            return Judgement(self.name, None, error=error)
        except Exception as exc:  # never raise from a judge
            return Judgement(self.name, None, error=f"judge call failed: {type(exc).__name__}")
        extra: dict[str, Any] = {
            "routed_position": slot,
            "judge_latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "judge_cost_usd": cost,
        }
        verdict = parse_verdict(content) if content is not None else None
        if verdict is None:
            return Judgement(
                self.name, None, error="the judge's reply is not a JSON verdict", extra=extra
            )
        mapped = "tie" if verdict == "tie" else ("routed" if verdict == slot else "reference")
        ok = mapped != "reference"
        extra["verdict"] = mapped
        return Judgement(self.name, ok, 1.0 if ok else 0.0, extra=extra)

    async def _ask(self, prompt: str) -> tuple[str | None, float]:
        """The judge model's reply text and its cost."""
        body: dict[str, Any] = {
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": JUDGE_MAX_TOKENS,
        }
        plan = _judge_plan(self.model)
        if self._json_mode:
            try:
                served = await self._dispatcher.complete(
                    plan, {**body, "response_format": {"type": "json_object"}}
                )
            except UpstreamRejected:
                # Perhaps no JSON mode here: ask without it, and stop asking with it
                # once that works.
                served = await self._dispatcher.complete(plan, body)
                self._json_mode = False
        else:
            served = await self._dispatcher.complete(plan, body)
        return _reply(served.data), served.usage.cost_usd


def _reply(data: Mapping[str, Any]) -> str | None:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None
    message = choices[0].get("message")
    if not isinstance(message, Mapping):
        return None
    content = message.get("content")
    return content if isinstance(content, str) else None


def _short(text: str) -> str:
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 1] + "…"


def judge_from_settings(settings: JudgeSettings | None, dispatcher: Dispatcher) -> Judge | None:
    """The judge the registry's ``shadow.judge`` asks for; None when it sets none (both
    answers are stored, unjudged)."""
    if settings is None:
        return None
    if settings.kind == "exact":
        return ExactJudge()
    if settings.model is None:  # the registry refuses this already
        raise ConfigError("a model judge needs 'model'", field="shadow.judge.model")
    return ModelJudge(dispatcher, settings.model, settings.max_chars)
