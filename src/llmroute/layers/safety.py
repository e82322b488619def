"""`SafetyLayer`: jailbreak / prompt-injection and PII checks, and the policy they trigger.

It runs after the routing layers (the policy is the chosen route's safety profile) and on
every request, pinned ones included; it may allow, redact, reroute to a guarded model or
block, whatever routing decided. It reuses the shared request embedding when the text it
scans is the routed text in one window; longer texts and tool results are scanned in
overlapping windows, embedded in one batch, and the worst window counts. The fast rules
read each text alone, but only as far as the windows reach. The windows past
`max_windows`, up to ``extra_windows`` more (`ExtraWindows`), are scored by the built-in
static detector, at its own threshold: ~1.5 ms a window where MiniLM's cost ~55, so a
pasted 15 kB file is read, not blocked. Past both the text is *unscanned* by the
classifier and the rules, and the profile's ``unscanned`` action applies.

The classifier does not score a window mostly in scripts the encoder does not read
(`ScriptCheck`, the intent layer's): its vector is made of unknown tokens and letter
fragments, and benign Russian or Arabic prose scored above the threshold. Such a window
is not embedded; the fast rules still read its text, a window holding `READ_ENOUGH`
letters the encoder reads is scored whatever its share (an English instruction pasted
into a Russian document), one holding `READ_SOME` has those letters scored alone (a
short one padded with Chinese), and the profile's ``unread_scripts`` action applies.

Nothing it records holds the matched text: findings are detector names, scores, PII
types and counts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from llmroute.decision import SafetyOutcome
from llmroute.encoders.base import Encoder, weights_identity
from llmroute.encoders.scripts import BUILTIN_SCRIPTS, ScriptCheck
from llmroute.errors import ConfigError
from llmroute.layers.base import DecisionContext, LayerResult
from llmroute.registry.schema import Action, Registry, RouteTo, SafetyProfile, SafetySettings
from llmroute.request import RouteRequest
from llmroute.safety.answer_pii import AnswerMask
from llmroute.safety.injection import InjectionDetector, builtin_detector_dir, load_detector
from llmroute.safety.pii import PII_TYPES, PLACEHOLDER, PhoneBudget, PiiDetector, PiiSpan, Redactor
from llmroute.safety.segments import Place, Segment, new_turn, replace_texts, segments_of
from llmroute.safety.windows import window_spans

__all__ = [
    "READ_ENOUGH",
    "READ_SOME",
    "SAFETY_LAYER",
    "ExtraWindows",
    "SafetyLayer",
    "build_safety_layer",
]

SAFETY_LAYER = "safety"
_DEFAULT_ROUTE = "default"  # the route of the default's requests (decide.DEFAULT_LAYER)
log = logging.getLogger("llmroute.safety")

READ_SOME = 12
"""Letters the encoder reads that make the classifier score them alone in a window mostly
in other scripts: a verb and its object, the least an instruction needs ("reveal your
prompt" holds 16, "ignore above" 11); a short Russian request naming "Python" holds 6."""

READ_ENOUGH = 32
"""Letters the encoder reads that make a window mostly in other scripts scored anyway:
about six English words, room for an instruction. A short Russian request naming
"Python" holds 6; an English injection of two sentences pasted into a Russian document,
~150 (some 40% of its window's letters)."""

# When several findings call for different actions, the strictest wins.
_SEVERITY = {"allow": 0, "redact": 1, "route": 2, "block": 3}


@dataclass(frozen=True, slots=True)
class _Call:
    action: str
    fired: str
    model: str | None = None


@dataclass(frozen=True, slots=True)
class ExtraWindows:
    """The windows past ``max_windows``: at most `count` more, scored by `detector` (the
    built-in static one, at ``injection.extra_threshold``, else its own threshold) on
    `encoder`'s vectors, those mostly in scripts it does not read found by `scripts`.
    With `detector` None they are more windows of the layer's own detector, which is that
    one already."""

    count: int
    detector: InjectionDetector | None = None
    encoder: Encoder | None = None
    scripts: ScriptCheck | None = None


@dataclass(frozen=True, slots=True)
class _Scan:
    """What the injection scan found: the worst scored window's score, a rule that
    matched, the windows cut, whether text was left over, the windows not scored for
    their script, the scripts of the first of them and how many of those had their
    letters the encoder reads scored alone; and of the windows cut, how many were past
    ``max_windows`` for the extra detector (`ExtraWindows`), how many of those it scored
    and their worst score, and how many of them it left *unscanned* (in scripts the
    registry's encoder reads and its own does not: `SafetyLayer._static_reads`).
    `unscanned` is either that or `past`: text past all the windows."""

    score: float | None = None
    rule: str | None = None
    windows: int = 0
    unscanned: bool = False
    unread: int = 0
    scripts: str | None = None
    partly: int = 0
    extra: int = 0
    extra_scored: int = 0
    extra_score: float | None = None
    beyond: int = 0
    past: bool = False

    @property
    def unscanned_for(self) -> tuple[str, ...]:
        """Why text went unscanned (`SafetyOutcome.unscanned_for`)."""
        return (*(("length",) if self.past else ()), *(("script",) if self.beyond else ()))


_NOTHING = _Scan()

_Profile = tuple[str, SafetyProfile, AnswerMask | None]  # a profile's name, it, its mask


KEPT_SPANS = 1_000
"""PII spans a decision keeps of its request, for another profile to be applied to them
(`SafetyLayer.also_under`: a key's pool sends the request to the default) without the
detector reading the texts again. A request with more (a pasted contact list of 100,000
numbers: 13 MB of spans, held with the decision while the request lasts; the decision
log's record drops them) keeps none, and such a later profile has its texts read again."""


@dataclass(frozen=True, slots=True)
class _Detected:
    """What the detectors saw in one request, whatever a profile does with it: the
    injection scan, and the spans the PII detector found by the order it read the texts
    (those it found none in left out); None when there were more than `KEPT_SPANS`."""

    scan: _Scan
    spans: Mapping[int, tuple[PiiSpan, ...]] | None


class _Found:
    """The PII detector's `find` for one request, keeping the spans it found (`kept`, up
    to `KEPT_SPANS`); or, given those of an earlier pass over the same request, answering
    from them: the texts are the same, read in the same order, whatever the profile."""

    __slots__ = ("_calls", "_detector", "_found", "_spans")

    def __init__(
        self, detector: PiiDetector | None, kept: Mapping[int, tuple[PiiSpan, ...]] | None = None
    ) -> None:
        self._detector = None if kept is not None else detector
        self._spans: Mapping[int, tuple[PiiSpan, ...]] = {} if kept is None else kept
        self._found = 0  # spans the detector found
        self._calls = 0

    @property
    def kept(self) -> Mapping[int, tuple[PiiSpan, ...]] | None:
        """The spans by the call that found them; None past `KEPT_SPANS`."""
        return None if self._found > KEPT_SPANS else self._spans

    def find(self, text: str, budget: PhoneBudget) -> list[PiiSpan]:
        call, self._calls = self._calls, self._calls + 1
        if self._detector is None:
            return list(self._spans.get(call, ()))
        spans = self._detector.find(text, budget)
        if spans:
            assert isinstance(self._spans, dict)
            self._found += len(spans)
            if self._found <= KEPT_SPANS:
                self._spans[call] = tuple(spans)
            elif self._spans:
                self._spans.clear()  # none kept: the spans are freed as they are used
        return spans


def _stricter(first: Action, then: Action) -> Action:
    """The stricter action (`_SEVERITY`'s order), `then` on a tie."""

    def severity(action: Action) -> int:
        return _SEVERITY["route" if isinstance(action, RouteTo) else action]

    return first if severity(first) > severity(then) else then


def _call(action: Action, fired: str) -> _Call:
    if isinstance(action, RouteTo):
        return _Call("route", fired, action.route)
    return _Call(action, fired)


class SafetyLayer:
    name = SAFETY_LAYER
    always_runs = True

    def __init__(
        self,
        settings: SafetySettings,
        *,
        route_profiles: Mapping[str, str],
        detector: InjectionDetector | None,
        pii: PiiDetector | None,
        pseudonym_key: bytes | None = None,
        scripts: ScriptCheck | None = None,
        extra: ExtraWindows | None = None,
    ) -> None:
        self._settings = settings
        self._pseudonym_key = pseudonym_key
        self._injection = settings.injection
        self._pii_settings = settings.pii
        self._route_profiles = dict(route_profiles)
        self._detector = detector
        self._threshold = (
            settings.injection.threshold
            if settings.injection.threshold is not None or detector is None
            else detector.threshold
        )
        self._pii = pii
        self._answer_masks = {
            name: AnswerMask(pii, profile)
            for name, profile in settings.profiles.items()
            if pii is not None and profile.masks_answers
        }
        self._scan_injection = frozenset(settings.injection.scan)
        self._scan_pii = frozenset(settings.pii.scan)
        self._scripts = scripts
        self._extra = extra
        self._extra_threshold = (
            None
            if extra is None or extra.detector is None
            else extra.detector.threshold
            if settings.injection.extra_threshold is None
            else settings.injection.extra_threshold
        )
        self._merged: dict[str, _Profile] = {}  # `_stricter`'s, by their names
        self._parts: dict[str, frozenset[str]] = {}  # the profiles each of them merges

    @property
    def threshold(self) -> float | None:
        return self._threshold

    def profile_for(self, ctx: DecisionContext) -> tuple[str, SafetyProfile]:
        """The profile of the route decided; with none decided, the default's."""
        name = self.profile_of(_DEFAULT_ROUTE if ctx.verdict is None else ctx.verdict.route)
        return name, self._settings.profiles[name]

    def profile_of(self, route: str) -> str:
        """The name of `route`'s profile (``default``: the default's)."""
        return self._route_profiles.get(route, self._settings.profile)

    def evaluate(self, ctx: DecisionContext) -> LayerResult:
        profile_name, profile = self.profile_for(ctx)
        segments = segments_of(ctx.request)
        scan = self._scan_for_injection(ctx, segments)
        mask = self._answer_masks.get(profile_name)
        found = _Found(self._pii)
        ctx.safety, detail = self._outcome(
            ctx.request, segments, scan, found, (profile_name, profile, mask)
        )
        return LayerResult(annotated=True, detail=detail)

    def also_under(
        self, outcome: SafetyOutcome, request: RouteRequest, name: str
    ) -> tuple[SafetyOutcome, Mapping[str, Any]] | None:
        """`outcome`, this layer's for `request`, with profile `name` applied as well, and
        its signal's detail: each finding gets the stricter of the two profiles' actions
        (an answer's PII masked when either masks it, restored when either restores),
        from what the detectors saw then: nothing is scanned or embedded again. None when
        `name` is `outcome`'s profile already, or one it merged (or `outcome` is not this
        layer's). `outcome` may be a merged one: a key's pool sends a request the LLM
        router moved to the default."""
        detected = outcome.detected
        if name in self._parts_of(outcome.profile) or not isinstance(detected, _Detected):
            return None
        merged = self._stricter(outcome.profile, name)
        found = _Found(self._pii, detected.spans)  # None: read again
        return self._outcome(request, segments_of(request), detected.scan, found, merged)

    def _stricter(self, first: str, then: str) -> _Profile:
        """Profiles `first` and `then` as one (``first+then``), each action the stricter
        of the two (`then`'s on a tie: two reroutes), made once per pair."""
        key = f"{first}+{then}"
        made = self._merged.get(key)
        if made is None:
            a, b = self._named(first), self._named(then)
            profile = SafetyProfile(
                injection=_stricter(a.injection, b.injection),
                pii={t: _stricter(a.pii_action(t), b.pii_action(t)) for t in PII_TYPES},
                unscanned=_stricter(a.unscanned, b.unscanned),
                unread_scripts=_stricter(a.unread_scripts, b.unread_scripts),
                restore=a.restore or b.restore,
                answer_pii={
                    t: "redact" if "redact" in (a.answer_action(t), b.answer_action(t)) else "allow"
                    for t in PII_TYPES
                },
            )
            mask = None
            if self._pii is not None and profile.masks_answers:
                mask = AnswerMask(self._pii, profile)
            self._parts[key] = self._parts_of(first) | {then}
            made = self._merged[key] = (key, profile, mask)
        return made

    def _named(self, name: str) -> SafetyProfile:
        """The profile `name`: the registry's, or one `_stricter` made."""
        made = self._merged.get(name)
        return self._settings.profiles[name] if made is None else made[1]

    def _parts_of(self, name: str) -> frozenset[str]:
        """The registry's profiles that profile `name` is made of (itself, unless merged)."""
        return self._parts.get(name, frozenset((name,)))

    def _outcome(
        self,
        request: RouteRequest,
        segments: Sequence[Segment],
        scan: _Scan,
        found: _Found,
        profile_of: _Profile,
    ) -> tuple[SafetyOutcome, Mapping[str, Any]]:
        """The outcome of `profile_of` (its name, itself, its answers' mask) on what the
        detectors saw (the injection `scan`; the PII spans read through `found`), and the
        detail of the layer's signal."""
        profile_name, profile, mask = profile_of
        calls: list[_Call] = []
        detail: dict[str, Any] = {"profile": profile_name}
        score, n_windows, unscanned = scan.score, scan.windows, scan.unscanned
        extra_score, extra_threshold = scan.extra_score, self._extra_threshold
        detail.update(self._scores_detail(scan))
        if scan.rule is not None:
            calls.append(_call(profile.injection, f"rule:{scan.rule}"))
        elif _reaches(score, self._threshold) or _reaches(extra_score, extra_threshold):
            calls.append(_call(profile.injection, "injection"))
        if scan.unread:
            detail.update(_unread_detail(scan))
            calls.append(_call(profile.unread_scripts, "unread_scripts"))
        if unscanned:
            calls.append(_Call(profile.unscanned, "unscanned"))
            detail["unscanned"] = list(scan.unscanned_for)

        # the tags the request already holds: only a PII detector issues placeholders
        redactor = Redactor(_placeholders_in(segments) if self._pii is not None else ())
        budget = PhoneBudget()  # one for the request's texts, fields included
        counts, replacements = self._scan_for_pii(segments, profile, calls, redactor, budget, found)
        if counts:
            detail["pii"] = dict(counts)
        fields = self._scan_fields(request.body, profile, redactor, budget, found)
        if fields:
            detail["fields"] = list(fields)

        action, fired, model = self._resolve(calls)
        decisive = tuple(
            dict.fromkeys(
                c.fired
                for c in calls
                if c.action == action and (action != "route" or c.model == model)
            )
        )
        redacted = restore = None
        if replacements and action != "block" and request.body is not None:
            redacted = replace_texts(request.body, replacements)
        if (replacements or fields) and action != "block" and profile.restore:
            restore = MappingProxyType(redactor.originals)
        outcome = SafetyOutcome(
            profile=profile_name,
            action=action,
            fired=fired,
            injection_score=score,
            pii=MappingProxyType(counts) if counts else MappingProxyType({}),
            windows=n_windows,
            unread_windows=scan.unread,
            extra_windows=scan.extra,
            extra_score=extra_score,
            unscanned=unscanned,
            unscanned_for=scan.unscanned_for,
            model=model,
            redacted_body=redacted,
            restore=restore,
            answer_mask=mask if action != "block" else None,
            decisive=decisive,
            # a blocked request sends nothing, but is logged: its end user as a pseudonym
            fields=MappingProxyType(fields) if fields else None,
            detected=_Detected(scan, found.kept),
        )
        detail["action"] = action
        if fired:
            detail["fired"] = list(fired)
        detail["summary"] = _summary(
            action, fired, (score, self._threshold), (extra_score, extra_threshold), counts, scan
        )
        if fields:
            detail["summary"] += f"; PII in {', '.join(fields)}: rewritten"
        return outcome, MappingProxyType(detail)

    def _scores_detail(self, scan: _Scan) -> dict[str, Any]:
        """The signal's account of the classifier's scores: the worst window's of the
        layer's detector and its threshold; of the extra windows, how many were cut, the
        worst score of those the static detector scored and its threshold."""
        detail: dict[str, Any] = {}
        if scan.score is not None:
            detail["injection_score"] = round(scan.score, 4)
            detail["threshold"] = self._threshold
        if scan.extra:
            detail["extra_windows"] = scan.extra
        if scan.extra_score is not None:
            detail["extra_score"] = round(scan.extra_score, 4)
            detail["extra_threshold"] = self._extra_threshold
        return detail

    def _scan_for_injection(self, ctx: DecisionContext, segments: Sequence[Segment]) -> _Scan:
        """Rules on each scanned text, then the classifier on the windows of them all,
        but those mostly in scripts the encoder does not read. Both read only what the
        windows cover: the rest is *unscanned*, so a huge text costs a bounded time."""
        detector = self._detector
        if detector is None:
            return _NOTHING
        settings = self._injection
        scanned = new_turn(segments, ctx.request)
        if settings.history:
            # what this request adds first: the windows (and the rules, which read no
            # further) spend their budget on it before the turns scanned when they were new
            added = {id(segment) for segment in scanned}
            scanned = [*scanned, *(s for s in segments if id(s) not in added)]
        texts = [s.text for s in scanned if s.role in self._scan_injection]
        if not texts:
            return _NOTHING
        # one text for the windows: seventeen short tool results are one window's read,
        # not seventeen windows of the budget (the rules look at each text alone)
        joined = texts[0] if len(texts) == 1 else _JOIN.join(texts)
        extra = self._extra
        spans, unscanned = window_spans(
            joined,
            settings.window_chars,
            settings.stride_chars,
            settings.max_windows + (0 if extra is None else extra.count),
        )
        for text in _covered(texts, max(end for _, end in spans)) if unscanned else texts:
            if (rule := detector.match_rules(text)) is not None:
                return _Scan(score=1.0, rule=rule)
        if len(spans) == 1 and spans[0] == (0, len(joined)):
            chunks = [joined]
        else:
            chunks = [joined[begin:end] for begin, end in spans]
        shared = len(chunks) == 1 and chunks[0] == ctx.request.text
        if shared:
            chunks = [ctx.request.text]  # the very text the intent layer checked: no recount
        # the windows past max_windows go to the extra detector, when it is another one
        more: list[str] = []
        beyond = 0  # extra windows the registry's encoder reads and the static one does not
        if extra is not None and extra.detector is not None:
            chunks, more = chunks[: settings.max_windows], chunks[settings.max_windows :]
            more, beyond = self._static_reads(more, extra.scripts)
        read, parts, unread = self._readable(chunks, self._scripts)
        more_read, more_parts, more_unread = self._readable(
            more, None if extra is None else extra.scripts
        )
        scan = _Scan(
            windows=len(chunks) + len(more) + beyond,
            unscanned=unscanned or beyond > 0,
            past=unscanned,
            unread=len(chunks) - len(read) + len(more) - len(more_read),
            scripts=unread if unread is not None else more_unread,
            partly=len(parts) + len(more_parts),
            extra=len(more) + beyond,
            beyond=beyond,
            extra_scored=len(more_read) + len(more_parts),
        )
        if more_read or more_parts:
            assert extra is not None and extra.detector is not None and extra.encoder is not None
            more_read = [*more_read, *more_parts]
            start = time.perf_counter_ns()
            more_vectors = extra.encoder.encode(more_read)
            ctx.encode_us += (time.perf_counter_ns() - start) / 1000.0
            more_scores = extra.detector.score(more_read, more_vectors)
            scan = replace(scan, extra_score=float(np.max(more_scores)))
        if parts:
            read = [*read, *parts]
        if not read:
            return scan
        # a shared window read whole: the request's embedding, no second encode
        vectors = ctx.embedding[np.newaxis, :] if shared and not parts else ctx.encode(read)
        scores = detector.score(read, vectors)
        return replace(scan, score=float(np.max(scores)))

    def _static_reads(self, chunks: list[str], check: ScriptCheck | None) -> tuple[list[str], int]:
        """The extra windows for the static detector (`check`: its encoder's scripts), and
        how many were left out: those mostly in scripts it does not read but the
        registry's encoder reads. No classifier that reads them scores them, so they are
        *unscanned*, as they were with ``extra_windows: 0``, not `unread_scripts` (which a
        profile may allow because its encoder reads every script). A window neither
        encoder reads is kept: unread, as the registry's own windows are."""
        if check is None:
            return chunks, 0
        own = self._scripts
        kept: list[str] = []
        for chunk in chunks:
            if check.unread(chunk, enough=READ_ENOUGH) is not None and (
                own is None or own.unread(chunk, enough=READ_ENOUGH) is None
            ):
                continue
            kept.append(chunk)
        return kept, len(chunks) - len(kept)

    @staticmethod
    def _readable(
        chunks: list[str], check: ScriptCheck | None
    ) -> tuple[list[str], list[str], str | None]:
        """The windows the classifier can read (`check`: its encoder's scripts); of the
        others, the letters it reads when they are `READ_SOME` or more (a short English
        instruction padded with Chinese); and the scripts of the first window it cannot
        read (None when it reads them all). A window read whole costs the check alone."""
        if check is None:
            return chunks, [], None
        read: list[str] = []
        parts: list[str] = []
        first: str | None = None
        for chunk in chunks:
            scripts = check.unread(chunk, enough=READ_ENOUGH)
            if scripts is None:
                read.append(chunk)
                continue
            if first is None:
                first = scripts
            if (part := check.read_part(chunk, least=READ_SOME)) is not None:
                parts.append(part)
        return read, parts, first

    def _scan_for_pii(
        self,
        segments: Sequence[Segment],
        profile: SafetyProfile,
        calls: list[_Call],
        redactor: Redactor,
        budget: PhoneBudget,
        found: _Found,
    ) -> tuple[dict[str, int], dict[Place, str]]:
        """PII counts by type; the redacted text of each segment with a span to redact
        (`redactor` keeps each placeholder issued, with the value it replaced)."""
        counts: dict[str, int] = {}
        replacements: dict[Place, str] = {}
        if self._pii is None:
            return counts, replacements
        called: set[str] = set()

        def spans_to_redact(text: str) -> list[PiiSpan]:
            """The spans of `text` the profile redacts; every finding counted and its
            action noted."""
            to_redact = []
            for span in found.find(text, budget):
                counts[span.type] = counts.get(span.type, 0) + 1
                action = profile.pii_action(span.type)
                if action == "redact":
                    to_redact.append(span)
                if span.type not in called:
                    called.add(span.type)
                    calls.append(_call(action, f"pii:{span.type}"))
            return to_redact

        for segment in segments:
            if segment.role not in self._scan_pii:
                continue
            if segment.call is not None:
                redacted = _redacted_arguments(segment.text, spans_to_redact, redactor)
            else:
                to_redact = spans_to_redact(segment.text)
                redacted = redactor.redact(segment.text, to_redact) if to_redact else None
            if redacted is not None:
                replacements[segment.place] = redacted
        return counts, replacements

    def _scan_fields(
        self,
        body: Mapping[str, Any] | None,
        profile: SafetyProfile,
        redactor: Redactor,
        budget: PhoneBudget,
        found: _Found,
    ) -> dict[str, Any]:
        """The body's own fields that go upstream beside the messages, rewritten where
        they hold PII the profile does not allow: the end-user identifiers (``user``,
        ``safety_identifier``, ``prompt_cache_key``; the fronts map Anthropic's
        ``metadata.user_id`` onto ``user``) become a pseudonym, the SHA-256 of the value,
        as OpenAI and Anthropic ask of callers (an e-mail address is the usual user id);
        ``metadata`` values have their spans replaced by placeholders. A field is never a
        reason to block or reroute: rewritten, it no longer holds the value."""
        if self._pii is None or body is None:
            return {}

        def held(text: str) -> list[PiiSpan]:
            spans = found.find(text, budget)
            return [s for s in spans if profile.pii_action(s.type) != "allow"]

        fields: dict[str, Any] = {}
        for key in _IDENTIFIERS:
            value = body.get(key)
            if isinstance(value, str) and value and held(value):
                fields[key] = pseudonym(value, self._pseudonym_key)
        metadata = body.get("metadata")
        if isinstance(metadata, Mapping):
            rewritten = dict(metadata)
            for key, value in metadata.items():
                if isinstance(value, str) and value and (spans := held(value)):
                    rewritten[key] = redactor.redact(value, spans)
            if rewritten != metadata:
                fields["metadata"] = rewritten
        return fields

    @staticmethod
    def _resolve(calls: Sequence[_Call]) -> tuple[str, tuple[str, ...], str | None]:
        """The strictest action, every detector that found something (allowed or not),
        and the model a reroute goes to (the first named, when several are)."""
        if not calls:
            return "allow", (), None
        worst = max(calls, key=lambda c: _SEVERITY[c.action])
        fired = tuple(dict.fromkeys(c.fired for c in calls))
        model = worst.model if worst.action == "route" else None
        return worst.action, fired, model


# the end-user identifiers of a chat body, which providers keep for abuse monitoring
_IDENTIFIERS = ("user", "safety_identifier", "prompt_cache_key")


def pseudonym(value: str, key: bytes | None = None) -> str:
    """What an identifier holding PII becomes upstream and in telemetry: stable, so a
    provider's abuse monitoring, prompt caching and `llmroute report`'s end users still
    tell users apart, without the value itself. Keyed (`pii.pseudonym_key_env`), it is
    an HMAC a provider cannot test candidate addresses against."""
    if key is not None:
        return "hmac:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:32]


def _placeholders_in(segments: Sequence[Segment]) -> set[str]:
    """The placeholder-like tags the request's own texts hold (few do: one substring
    test a text). Not the assistant's: its tags are the gateway's own from earlier turns
    (an answer not restored), which the same values get again now."""
    return {
        tag
        for s in segments
        if s.role != "assistant" and "<" in s.text
        for tag in PLACEHOLDER.findall(s.text)
    }


def _redacted_arguments(
    text: str, spans_to_redact: Callable[[str], list[PiiSpan]], redactor: Redactor
) -> str | None:
    """Tool-call arguments with their PII redacted, None when there is none to redact.
    JSON arguments are read as what they mean: each string value (and number, where a
    card or phone number may be written as one) scanned decoded, a redacted value written
    back as a string, the whole written again; so an escape (``\\n``, ``\\u00eb``) neither
    hides a value nor makes a span cross the syntax. Anything else is scanned as text."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        to_redact = spans_to_redact(text)
        return redactor.redact(text, to_redact) if to_redact else None
    changed = False

    def walk(item: Any) -> Any:
        nonlocal changed
        if isinstance(item, dict):
            return {key: walk(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [walk(inner) for inner in item]
        if isinstance(item, bool) or item is None:
            return item
        if isinstance(item, str | int | float):
            written = item if isinstance(item, str) else json.dumps(item)
            to_redact = spans_to_redact(written)
            if to_redact:
                changed = True
                return redactor.redact(written, to_redact)
        return item

    redacted = walk(value)
    return json.dumps(redacted, ensure_ascii=False) if changed else None


_JOIN = "\n\n"
"""Between the scanned texts of a request in the text its windows are cut from."""


def _covered(texts: Sequence[str], reach: int) -> list[str]:
    """Each of `texts` up to `reach`, an index into their `_JOIN`: a text past it is
    dropped, the one it falls in cut there. The rules read no further than the windows,
    whose cost is bounded (the rules' is not: ~1 s a MB of a text of their own words)."""
    out: list[str] = []
    start = 0
    for text in texts:
        if start >= reach:
            break
        out.append(text if start + len(text) <= reach else text[: reach - start])
        start += len(text) + len(_JOIN)
    return out


def _reaches(score: float | None, threshold: float | None) -> bool:
    """Whether a detector's worst window flags the request: its score reaches its own
    threshold."""
    return score is not None and threshold is not None and score >= threshold


def _unread_detail(scan: _Scan) -> dict[str, Any]:
    """The signal's account of the windows not scored whole: their scripts (of the first),
    how many, and how many had the letters the encoder reads scored alone."""
    detail: dict[str, Any] = {"unread_scripts": scan.scripts, "unread_windows": scan.unread}
    if scan.partly:
        detail["read_part_windows"] = scan.partly
    return detail


def _summary(
    action: str,
    fired: Sequence[str],
    own: tuple[float | None, float | None],
    extra: tuple[float | None, float | None],
    counts: Mapping[str, int],
    scan: _Scan,
) -> str:
    """One line for ``--explain``: the action, then what the detectors saw: the layer's
    detector's worst score and threshold (`own`), and the extra windows' detector's
    (`extra`), each with the windows it scored."""
    seen = []
    n_windows = scan.windows - scan.unread
    score, threshold = own
    if score is not None and threshold is not None:
        cmp = "≥" if score >= threshold else "<"
        scored = n_windows + scan.partly - scan.extra_scored - scan.beyond
        where = f" in {scored} windows" if scored > 1 else ""
        seen.append(f"injection {score:.3f} {cmp} {threshold:.3f}{where}")
    extra_score, extra_threshold = extra
    if extra_score is not None and extra_threshold is not None:
        cmp = "≥" if extra_score >= extra_threshold else "<"
        more = scan.extra_scored
        seen.append(
            f"{'injection ' if score is None else ''}{extra_score:.3f} {cmp} "
            f"{extra_threshold:.3f} in {more} more window{'s' if more > 1 else ''} by the "
            "static detector"
        )
    if scan.unread:
        which = "text" if not n_windows else f"{scan.unread} of {scan.windows} windows"
        partly = ""
        if scan.partly:
            of = "" if not n_windows and scan.windows == 1 else f" of {scan.partly}"
            partly = f"; the letters it reads{of} scored alone"
        seen.append(
            f"injection not scored: {which} mostly in a script the encoder does not read "
            f"({scan.scripts} of the letters){partly}"
        )
    if scan.beyond:
        seen.append(
            f"unscanned: {scan.beyond} window{'s' if scan.beyond > 1 else ''} past max_windows "
            "in a script the encoder reads and the static detector does not"
        )
    seen.append("PII " + ", ".join(f"{k}×{v}" for k, v in counts.items()) if counts else "no PII")
    head = action if not fired else f"{action} ({', '.join(fired)})"
    return f"{head}: {'; '.join(seen)}"


def build_safety_layer(registry: Registry, encoder: Encoder, base_dir: Path) -> SafetyLayer:
    """The registry's safety layer: the injection artifact (``builtin`` resolves by the
    encoder) and the PII detector, each when enabled."""
    settings = registry.safety
    assert settings is not None
    detector = None
    if settings.injection.enabled:
        artifact = settings.injection.artifact
        directory = (
            builtin_detector_dir(encoder.identity)
            if artifact == "builtin"
            else (base_dir / artifact)
        )
        detector = load_detector(directory, encoder_identity=encoder.identity, dim=encoder.dim)
    pii = None
    if settings.pii.enabled:
        pii = PiiDetector(
            settings.pii.entities,
            phone_regions=settings.pii.phone_regions,
            ner_model=settings.pii.ner_model,
        )
    profiles = {r.name: r.policy.safety for r in registry.routes if r.policy.safety is not None}
    if registry.default.policy.safety is not None:  # "default" is no route's name
        profiles[_DEFAULT_ROUTE] = registry.default.policy.safety
    for profile_name in (*profiles.values(), settings.profile):
        if profile_name not in settings.profiles:  # the schema checks this; belt and braces
            raise ConfigError(f"unknown safety profile {profile_name!r}")
    key_env = settings.pii.pseudonym_key_env
    key = None
    if key_env is not None:
        secret = os.environ.get(key_env, "")
        if len(secret) < 16:
            raise ConfigError(
                f"environment variable {key_env} (the pseudonyms' key) is "
                + ("not set" if not secret else "shorter than 16 characters"),
                field="safety.pii.pseudonym_key_env",
            )
        key = secret.encode()
    scripts = None
    extra = None
    if detector is not None:
        from llmroute.assemble import script_check  # it builds this layer: imported here

        scripts = script_check(registry, encoder)
        if settings.injection.extra_windows:
            extra = _extra_windows(
                settings.injection.extra_windows, settings.injection.artifact, encoder
            )
    return SafetyLayer(
        settings,
        route_profiles=profiles,
        detector=detector,
        pii=pii,
        pseudonym_key=key,
        scripts=scripts,
        extra=extra,
    )


def _extra_windows(count: int, artifact: str, encoder: Encoder) -> ExtraWindows:
    """The detector of the windows past ``max_windows``: the built-in static one, loaded
    here, once (its encoder is the process's shared ``builtin:static``: ~16 MB, none
    more when the registry's encoder is it); none when the registry's detector is it
    already, whose windows these just are more of."""
    if artifact == "builtin" and weights_identity(encoder.identity).startswith(f"{_STATIC}@"):
        return ExtraWindows(count)
    from llmroute.assemble import script_check_for
    from llmroute.encoders.builtin import load_builtin
    from llmroute.registry.schema import BuiltinEncoderSpec

    static = load_builtin(_STATIC)
    detector = load_detector(
        builtin_detector_dir(static.identity), encoder_identity=static.identity, dim=static.dim
    )
    scripts = script_check_for(BuiltinEncoderSpec(name="static"), BUILTIN_SCRIPTS)
    return ExtraWindows(count, detector, static, scripts)


_STATIC = "builtin:static"
