"""PII the model writes in its answer, redacted on the way to the client (a safety
profile's ``answer_pii``; docs/safety.md).

Input redaction keeps what the client sent from the provider; this keeps what the model
produces (an address from its training data, a customer's phone number from a tool
result) from the client. Each span found in the answer's text or refusal is replaced by
its type, ``<EMAIL>``, ``<PHONE>``: unnumbered, so that it is never taken for a
placeholder the request issued (those, with ``restore``, go back as the client's own
values afterwards). Tool-call arguments are left alone: an agent's ``send_email`` needs
its address, and its tools are the operator's code. The model's thinking is redacted in
``reasoning_content``; Anthropic's ``thinking_blocks`` are left out of the answer, since
a redacted block would no longer match its signature (the client then sends none back,
and a tool loop's next turn goes without thinking, as docs/reasoning.md says).

A stream holds back its last `HOLD` characters per choice, so that a span cut between
two chunks is seen whole, and a span that reaches into them is held with them: the
client reads the answer up to 256 characters later, and all of it by the finish reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from llmroute.registry.schema import SafetyProfile
from llmroute.safety.pii import PiiDetector, PiiSpan, replace_spans
from llmroute.safety.stream_edit import Key, StreamEdit

__all__ = ["HOLD", "AnswerMask", "Counted", "StreamMask"]

HOLD = 256  # characters a stream holds back per choice: longer than any span's own text


Counted = Callable[[str], None]  # told the type of each span redacted (a metric)


class AnswerMask:
    """One profile's redaction of answers, with the gateway's PII detector."""

    def __init__(self, detector: PiiDetector, profile: SafetyProfile) -> None:
        self._detector = detector
        self._profile = profile

    def spans(self, text: str) -> list[PiiSpan]:
        """The spans of `text` the profile redacts, in order."""
        found = self._detector.find(text) if text.strip() else []
        return sorted(
            (s for s in found if self._profile.answer_action(s.type) == "redact"),
            key=lambda s: s.start,
        )

    def text(self, text: str, counted: Counted | None = None) -> str:
        return _masked(text, self.spans(text), counted)

    def completion(self, data: Any, counted: Counted | None = None) -> Any:
        """A chat completion with its choices' content, refusal and reasoning redacted
        (thinking blocks left out), in place."""
        choices = data.get("choices") if isinstance(data, dict) else None
        for choice in choices if isinstance(choices, list) else ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict):
                continue
            message.pop("thinking_blocks", None)
            for key in StreamMask.fields:
                if isinstance(message.get(key), str):
                    message[key] = self.text(message[key], counted)
        return data

    def stream(self, counted: Counted | None = None) -> StreamMask:
        return StreamMask(self, counted)


def _masked(text: str, spans: Sequence[PiiSpan], counted: Counted | None = None) -> str:
    def label(span: PiiSpan, _value: str) -> str:
        if counted is not None:
            counted(span.type)
        return f"<{span.type}>"

    return replace_spans(text, spans, label)


class StreamMask(StreamEdit):
    """`AnswerMask` over a chat-completions SSE stream."""

    edits_arguments = False
    fields = ("content", "refusal", "reasoning_content")
    dropped = ("thinking_blocks",)

    def __init__(self, mask: AnswerMask, counted: Counted | None = None) -> None:
        super().__init__()
        self._mask = mask
        self._counted = counted

    def _split(self, text: str, key: Key, final: bool) -> tuple[str, str]:
        if not final and len(text) <= HOLD:
            return "", text
        spans = self._mask.spans(text)
        cut = len(text) if final else len(text) - HOLD
        for span in spans:  # never cut a span in two: it goes out whole, later
            if span.start < cut < span.end:
                cut = span.start
        done = [s for s in spans if s.end <= cut]
        return _masked(text[:cut], done, self._counted), text[cut:]
