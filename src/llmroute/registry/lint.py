"""Warnings about a valid registry that probably does not do what its author meant,
printed by ``llmroute registry check`` (``--strict`` fails on them).

Each warning names where it is (``routes[1].examples[0]``) and why it matters. They are
warnings, not errors: a registry written by ``registry from-examples`` from noisy labels
may hold them, and it must still load.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from llmroute.errors import ConfigError
from llmroute.money import usd
from llmroute.registry import chat_formats
from llmroute.registry.claude_thinking import (
    FIRST_ADAPTIVE,
    FIRST_ADAPTIVE_ONLY,
    claude_version,
)
from llmroute.registry.schema import (
    ANSWER_LIMITS,
    BuiltinEncoderSpec,
    Default,
    InjectionSettings,
    Model,
    Reasoning,
    Registry,
    Route,
    RouteTo,
    Rule,
)

if TYPE_CHECKING:
    from llmroute.registry.loader import LoadedRegistry

__all__ = ["lint", "lint_files"]

_SPACE = re.compile(r"\s+")
_EDGE = re.compile(r"^[\s\"'“”‘’`]+|[\s\"'“”‘’`.!?…]+$")


def _key(text: str) -> str:
    """An example as the encoder hears it, near enough: case, surrounding quotes,
    trailing punctuation and runs of spaces do not matter."""
    return _SPACE.sub(" ", _EDGE.sub("", text.casefold()))


def lint(registry: Registry) -> list[str]:
    """Every warning: a lone route that takes everything, examples, what requests with
    images or tools may reach, OpenAI
    reasoning models sent parameters they refuse, Claude models told a thinking form
    their version refuses, conversation affinity without the prices it compares, content
    fallbacks behind their target's own filter, budgets nothing counts against or no
    call fits in, llamacpp chat formats llama-cpp-python is not here to check, a
    spaCy model no PII type uses, injection or PII settings and profile actions kept
    while their detector is off, a `restore` with nothing redacted to restore, and
    injection windows that do not overlap or are longer than the encoder reads."""
    return (
        _lone_route(registry)
        + _example_warnings(registry)
        + _capability_gaps(registry)
        + _unfitted_reasoning_models(registry)
        + _refused_thinking_forms(registry)
        + _unpriced_affinity(registry)
        + _same_filter_content_fallbacks(registry)
        + _idle_budgets(registry)
        + _unchecked_chat_formats(registry)
        + _unused_ner_model(registry)
        + _idle_injection_settings(registry)
        + _idle_pii_settings(registry)
        + _idle_profile_actions(registry)
        + _nothing_to_restore(registry)
        + _unfitted_windows(registry)
    )


def _idle_injection_settings(registry: Registry) -> list[str]:
    """Injection settings written while the detector is off: none applies. A warning,
    not an error: turning the detector off for a while keeps its settings."""
    injection = None if registry.safety is None else registry.safety.injection
    if injection is None or injection.enabled:
        return []
    idle = sorted(injection.model_fields_set - {"enabled"})
    return [
        f"safety.injection.{key}: set, but safety.injection.enabled is false: it does "
        "nothing until the detector is turned on"
        for key in idle
    ]


def _idle_pii_settings(registry: Registry) -> list[str]:
    """PII settings written while the detector is off, as `_idle_injection_settings`.
    Not `pseudonym_key_env`: ``db forget --end-user`` finds the ids logged while it was on
    by their pseudonyms, made with that key."""
    pii = None if registry.safety is None else registry.safety.pii
    if pii is None or pii.enabled:
        return []
    idle = sorted(pii.model_fields_set - {"enabled", "pseudonym_key_env"})
    return [
        f"safety.pii.{key}: set, but safety.pii.enabled is false: it does nothing until "
        "the detector is turned on"
        for key in idle
    ]


def _nothing_to_restore(registry: Registry) -> list[str]:
    """`restore: true` in a profile that redacts no PII type: its requests carry no
    placeholder to put back. (Applied together with a profile that redacts, after the
    LLM router moved a request, the pair restores that one's; a rare path, not the one
    written.) With the detector off, `_idle_profile_actions` says so."""
    safety = registry.safety
    if safety is None or not safety.pii.enabled:
        return []
    out = []
    for name, profile in sorted(safety.profiles.items()):
        actions = profile.pii.values() if isinstance(profile.pii, dict) else (profile.pii,)
        if profile.restore and "redact" not in actions:
            out.append(
                f"safety.profiles.{name}.restore: true, but the profile redacts no PII type "
                f"(pii: {_flow(profile.pii)}), so its requests carry no placeholder to "
                "restore; redact a type, or remove restore"
            )
    return out


def _flow(action: object) -> str:
    """A profile's action as YAML's flow style writes it: ``{EMAIL: block, "*": allow}``
    (a bare ``*`` is an alias there)."""
    if isinstance(action, dict):
        pairs = (
            f"{json.dumps(key) if key == '*' else key}: {_flow(value)}"
            for key, value in action.items()
        )
        return "{" + ", ".join(pairs) + "}"
    if isinstance(action, RouteTo):
        return f"{{route: {action.route}}}"
    return str(action)


def _unfitted_windows(registry: Registry) -> list[str]:
    """Injection windows that loaded but read less than they seem to: a stride equal to
    the window (they only touch, so an instruction cut at an edge is read whole by
    neither), and a window longer than a built-in encoder reads (``max_tokens`` ×
    `CHARS_PER_TOKEN`), the registry's or the built-in static one of the extra windows
    (`llmroute.layers.safety`'s ``_extra_windows``): the rest of it reaches only the
    n-gram features, and nothing says so, where text past the last window is at least
    called unscanned."""
    from llmroute.encoders.tokenize import CHARS_PER_TOKEN  # the tokenizer: only when linting

    injection = None if registry.safety is None else registry.safety.injection
    if injection is None or not injection.enabled:
        return []
    out = []
    size = injection.window_chars
    if injection.stride_chars == size:
        written = "stride_chars" if "stride_chars" in injection.model_fields_set else "window_chars"
        default = InjectionSettings()
        out.append(
            f"safety.injection.{written}: stride_chars equals window_chars ({size}), so the "
            "windows do not overlap: an instruction cut at a window's edge is read whole by "
            "neither; make the stride smaller than the window (the defaults, "
            f"{default.stride_chars} and {default.window_chars}, overlap by "
            f"{default.window_chars - default.stride_chars} characters)"
        )
    encoder = registry.encoder
    static = BuiltinEncoderSpec(name="static")  # what the extra windows are read by
    own = (  # the registry's detector is the static one: they are its own windows
        injection.artifact == "builtin"
        and isinstance(encoder, BuiltinEncoderSpec)
        and encoder.name == "static"
    )
    if isinstance(encoder, BuiltinEncoderSpec) and size > encoder.max_tokens * CHARS_PER_TOKEN:
        reads = encoder.max_tokens * CHARS_PER_TOKEN
        out.append(
            f"safety.injection.window_chars: {size} characters, but the encoder "
            f"(builtin:{encoder.name}, max_tokens {encoder.max_tokens}, truncate "
            f"{encoder.truncate}) reads at most about {reads} of a window "
            f"({CHARS_PER_TOKEN} characters a token): the rest reaches only the "
            "detector's n-gram features, so an instruction there is likely missed; use "
            f"windows of at most {reads} characters (and more of them: max_windows), or "
            "raise encoder.max_tokens"
        )
    elif injection.extra_windows and not own and size > static.max_tokens * CHARS_PER_TOKEN:
        reads = static.max_tokens * CHARS_PER_TOKEN
        out.append(
            f"safety.injection.window_chars: {size} characters, but the built-in static "
            f"detector that scores the extra_windows (max_tokens {static.max_tokens}) reads "
            f"at most about {reads} of a window ({CHARS_PER_TOKEN} characters a token): the "
            "rest of those windows reaches only its n-gram features, so an instruction "
            f"there is likely missed; use windows of at most {reads} characters (and more "
            "of them)"
        )
    return out


def _idle_profile_actions(registry: Registry) -> list[str]:
    """Profile actions written for a detector that is off: none applies (`injection`,
    `unscanned` and `unread_scripts` follow the injection scan, `pii` and `restore` the
    PII one).
    Defaults are not warned of: every profile has them."""
    safety = registry.safety
    if safety is None:
        return []
    off: dict[str, str] = {}
    if not safety.injection.enabled:
        off |= dict.fromkeys(("injection", "unscanned", "unread_scripts"), "injection")
    if not safety.pii.enabled:
        off |= dict.fromkeys(("pii", "restore"), "pii")  # nothing redacted to restore
    return [
        f"safety.profiles.{name}.{key}: set, but safety.{off[key]}.enabled is false: it "
        "never applies until the detector is turned on"
        for name, profile in sorted(safety.profiles.items())
        for key in sorted(profile.model_fields_set & off.keys())
        if key != "restore" or profile.restore  # `restore: false` is what happens
    ]


def _unused_ner_model(registry: Registry) -> list[str]:
    """A spaCy model given for PERSON and LOCATION while `entities` names neither: it is
    never loaded, and names and places pass undetected."""
    pii = None if registry.safety is None else registry.safety.pii
    if pii is None or not pii.enabled or pii.ner_model is None or pii.entities is None:
        return []  # entities unset: every type, these two included
    if {"PERSON", "LOCATION"} & {name.upper() for name in pii.entities}:
        return []
    return [
        "safety.pii.ner_model: set, but safety.pii.entities names neither PERSON nor "
        "LOCATION, the only types it finds: no name or place is detected; add them to "
        "entities, or remove ner_model"
    ]


# The examples' warnings last computed: (what they depend on, the warnings).
_last_examples: tuple[tuple[object, ...], tuple[str, ...]] | None = None
_LAST_EXAMPLES_LOCK = threading.Lock()


def _example_warnings(registry: Registry) -> list[str]:
    """`_example_conflicts` then `_unread_examples`, reused from the last call when the
    encoder, the routes' names and examples and ``intent.out_of_scope`` are unchanged.

    Why: a gateway lints each registry it reloads, right after the swap, in a worker
    thread, and these two read every example (170 ms at 300 routes / 15k examples), which
    held the GIL against the event loop: the first requests to the new registry took
    10-170 ms instead of 2-3 on a busy machine. Most reloads (a model or provider added)
    leave the examples as they were, and then cost a comparison of them (2 ms). Keeping
    one copy of the last examples linted is the price."""
    global _last_examples
    key = (
        registry.encoder,
        tuple((route.name, route.examples) for route in registry.routes),
        tuple(registry.intent.out_of_scope),
    )
    with _LAST_EXAMPLES_LOCK:
        last = _last_examples
    if last is not None and last[0] == key:
        return list(last[1])
    found = _example_conflicts(registry) + _unread_examples(registry)
    with _LAST_EXAMPLES_LOCK:
        _last_examples = (key, tuple(found))
    return found


def lint_files(loaded: LoadedRegistry) -> list[str]:
    """Warnings about the files a registry names that are not there: a llamacpp model's
    GGUF path (``package:`` references are assembled at start, not looked for), once per
    file, at the first field that names it and naming every other (two models sharing a
    missing file were told as the first alone). A warning, not an error: CI checks
    registries on machines without the models, and ``serve`` refuses to start without
    the file anyway, at the same line."""
    from llmroute.providers.llamacpp import PACKAGE_PREFIX, resolve_gguf  # when linting

    registry = loaded.registry
    # each missing file (however its paths are spelled) -> the first path, why it could
    # not be looked up (None: it is not there), and the fields naming it in the file's order
    missing: dict[str, tuple[Path, str | None, list[str]]] = {}
    for name, model in registry.models.items():
        for index, target in enumerate(model.targets()):
            gguf = target.model
            provider = registry.providers.get(target.provider)
            if provider is None or provider.kind != "llamacpp" or gguf is None:
                continue
            if gguf.startswith(PACKAGE_PREFIX):
                continue
            path = resolve_gguf(gguf, loaded.base_dir)
            why = None
            try:
                if path.is_file():
                    continue
            except OSError as exc:  # a name past the file system's 255 bytes
                why = exc.strerror or type(exc).__name__
            field = f"models.{name}" + (f".deployments[{index}]" * bool(model.deployments))
            held = missing.setdefault(os.path.abspath(path), (path, why, []))
            held[2].append(f"{field}.model")
    out = []
    for path, why, (field, *others) in missing.values():
        also = [_with_line(loaded, other) for other in others]
        warning = ConfigError(
            f"GGUF file not found: {path} ({f'{why}; ' if why else ''}a path relative to "
            "the registry's folder, or package:NAME)"
            + (f"; also named by {', '.join(also)}" if also else "")
            + "; `llmroute serve` does not start without it",
            field=field,
        )
        out.append(str(loaded.at(warning)))
    return out


def _with_line(loaded: LoadedRegistry, field: str) -> str:
    """`field`, with its line in the registry file when it has one."""
    line = loaded.at(ConfigError("", field=field)).line
    return field if line is None else f"{field} (line {line})"


def _unchecked_chat_formats(registry: Registry) -> list[str]:
    """A llamacpp `chat_format` that none of llama-cpp-python 0.3's names is, where it is
    not installed to ask (with it, the name is checked at load): a typo, or a format a
    newer llama-cpp-python knows."""
    named = {
        name: provider.chat_format
        for name, provider in registry.providers.items()
        if provider.kind == "llamacpp" and provider.chat_format is not None
    }
    if not named or chat_formats.installed() is not None:
        return []
    return [
        f"providers.{name}.chat_format: {message} (llama-cpp-python is not installed here to "
        "check it against; `llmroute serve` refuses a name the installed one does not know)"
        for name, chat_format in named.items()
        if (message := chat_formats.unknown(chat_format, chat_formats.KNOWN)) is not None
    ]


def _lone_route(registry: Registry) -> list[str]:
    """One route on the linear head with nothing out of scope: a softmax over one class
    scores it 1.0 for every prompt, so it takes every request and the default never
    serves (a difficulty router there never runs)."""
    intent = registry.intent
    if len(registry.routes) != 1 or intent.method != "linear" or intent.out_of_scope:
        return []
    name = registry.routes[0].name
    return [
        f"routes: {name!r} is the only route and intent.out_of_scope is empty, so the "
        "linear head scores it 1.0 for every prompt: it takes every request and the default "
        "never serves; add intent.out_of_scope examples (prompts it must not take) or a "
        "second route"
    ]


def _idle_budgets(registry: Registry) -> list[str]:
    """A model budget on a model without a price (nothing counts against it), and a
    hard budget smaller than the worst case of a request that sets no ``max_tokens``
    on a model it covers (only requests asking for short answers are ever sent)."""
    from llmroute.dispatch.budgets import worst_case  # the tokenizer: only when linting

    out = []
    keys = registry.auth.keys if registry.auth is not None else ()
    for name, model in registry.models.items():
        price = model.price
        if model.budget is not None and price.input == 0 and price.output == 0:
            out.append(
                f"models.{name}.budget: the model has no price, so nothing is counted "
                "against its budget; give it a price"
            )
        if model.kind != "chat" or not model.targets():
            continue
        provider = registry.providers.get(model.targets()[0].provider)
        if provider is None:
            continue
        worst = worst_case(dict(model.params), model, provider)
        hint = _shorter_answers(model)
        covered = [(f"models.{name}.budget", model.budget)] + [
            (f"auth.keys[{i}].budget", key.budget)
            for i, key in enumerate(keys)
            if key.pool is None or name in key.pool
        ]
        for where, budget in covered:
            if budget is not None and budget.hard and worst.usd > budget.usd:
                out.append(
                    f"{where}: a request to {name} without max_tokens may cost "
                    f"{usd(worst.usd)} for its answer alone (up to {worst.answer_tokens:,} "
                    f"tokens), more than the whole hard budget ({usd(budget.usd)}): "
                    f"only requests asking for shorter answers are ever sent; {hint}, or a "
                    "larger budget"
                )
    return out


def _shorter_answers(model: Model) -> str:
    """What bounds `model`'s answers below the worst case `_idle_budgets` found: a
    model that declares its API's cap (`max_output_tokens`) needs a default length, not
    that cap asked for again."""
    for key in ANSWER_LIMITS:
        length = model.params.get(key)
        if isinstance(length, int) and not isinstance(length, bool):
            return f"set a smaller params.{key} on the model ({length:,})"
    if model.max_output_tokens is not None:
        return (
            "set params.max_tokens on the model (the answer length of a request that sets "
            f"none; max_output_tokens, {model.max_output_tokens:,}, is its API's cap)"
        )
    return "set the model's max_output_tokens or params.max_tokens"


def _same_filter_content_fallbacks(registry: Registry) -> list[str]:
    """A route's (or the default's) ``content_fallback`` served where a model it stands
    in for is (the same endpoint): the filter that refused the request sits in front of
    the fallback too. The default's are the models it picks (`Default.picks`: the target,
    the difficulty router's strong and weak models, the reasoning tier)."""
    out = []
    places: list[tuple[str, Route | Default]] = [
        (f"routes[{i}] ({r.name})", r) for i, r in enumerate(registry.routes)
    ]
    places.append(("default", registry.default))
    for where, place in places:
        fallback = place.policy.content_fallback
        if fallback is None or fallback not in registry.models:
            continue
        other = _endpoints(registry, fallback)
        if not other:
            continue
        picks = place.picks() if isinstance(place, Default) else (place.target,)
        for pick in picks:
            if pick == fallback or pick not in registry.models:
                continue
            if other <= _endpoints(registry, pick):
                out.append(
                    f"{where}: content_fallback {fallback} is served at the "
                    f"endpoint of its {_role(place, pick)} {pick}, whose content filter is "
                    "likely to refuse what it refused (unless it filters models apart): a "
                    "model of another provider is the usual choice"
                )
                break  # one warning a place
    return out


def _role(place: Route | Default, model: str) -> str:
    """What `model` is to `place`: its target, or the default's strong, weak or reasoning
    model."""
    if model == place.target or not isinstance(place, Default):
        return "target"
    difficulty = place.difficulty
    if difficulty is not None and model == difficulty.strong:
        return "strong model"
    if difficulty is not None and model == difficulty.weak:
        return "weak model"
    return "reasoning_target"


def _endpoints(registry: Registry, model: str) -> set[tuple[str, str]]:
    """Where a pool model is served: each provider's kind and base URL."""
    found: set[tuple[str, str]] = set()
    for name in registry.models[model].provider_names():
        spec = registry.providers.get(name)
        if spec is not None:
            found.add((spec.kind, spec.base_url or name))
    return found


# OpenAI's reasoning models (o1, o3, o4-mini, gpt-5 ..., dated or not) refuse max_tokens
# (they take max_completion_tokens) and any temperature or top_p but the default.
_OPENAI_REASONING = re.compile(r"^(o\d+|gpt-5)(-(mini|nano|pro))?(-\d{4}-\d{2}-\d{2})?$")
_OPENAI_HOST = "api.openai.com"


def _unfitted_reasoning_models(registry: Registry) -> list[str]:
    """A pool model on OpenAI's own API that is one of its reasoning models, with no
    ``rename_params`` for ``max_tokens``: a client's ``max_tokens``, sent to the router
    that then picks this model, is a 400 the client could not have avoided."""
    out = []
    for name, model in registry.models.items():
        if model.kind != "chat" or "max_tokens" in model.rename_params:
            continue
        for target in model.targets():
            spec = registry.providers.get(target.provider)
            upstream = target.model or model.model
            if (
                spec is not None
                and spec.kind == "openai"
                and _OPENAI_HOST in (spec.base_url or "")
                and _OPENAI_REASONING.match(upstream)
            ):
                out.append(
                    f"models.{name}: {upstream} on OpenAI's API refuses max_tokens, "
                    "temperature and top_p, which clients send to the router: add "
                    "rename_params: {max_tokens: max_completion_tokens} and drop_params: "
                    "[temperature, top_p]"
                )
                break
    return out


def _refused_thinking_forms(registry: Registry) -> list[str]:
    """A Claude model whose ``reasoning.thinking`` names the form its version refuses:
    ``budget`` on Opus 4.7 and later (a 400 for every thinking request), ``adaptive``
    before 4.6. (``auto`` reads the version itself.)"""
    out = []
    for name, model in registry.models.items():
        reasoning = model.reasoning
        if not isinstance(reasoning, Reasoning) or reasoning.thinking == "auto":
            continue
        for target in model.targets():
            upstream = target.model or model.model
            version = claude_version(upstream)
            if version is None:
                continue
            if reasoning.thinking == "budget" and version >= FIRST_ADAPTIVE_ONLY:
                refused = "budget_tokens (it takes only adaptive thinking)"
            elif reasoning.thinking == "adaptive" and version < FIRST_ADAPTIVE:
                refused = "adaptive thinking (it takes only budget_tokens)"
            else:
                continue
            out.append(
                f"models.{name}.reasoning.thinking: {upstream} refuses {refused}: set "
                "thinking: auto, or the form it takes"
            )
            break
    return out


def _unpriced_affinity(registry: Registry) -> list[str]:
    """``affinity.mode: upgrade`` keeps the costlier of two models by price: a chat model
    without one counts as free, so a conversation never moves up to it and always moves
    off it. Warned when some models are priced and others not (a pool priced nowhere is
    a choice: upgrade then keeps the first model)."""
    settings = registry.affinity
    if settings is None or settings.mode != "upgrade":
        return []
    chat = {name: m.price for name, m in registry.models.items() if m.kind == "chat"}
    free = sorted(name for name, p in chat.items() if p.input == 0 and p.output == 0)
    if not free or len(free) == len(chat):
        return []
    return [
        f"affinity: mode upgrade keeps the costlier model, but {', '.join(free)} "
        f"{'has' if len(free) == 1 else 'have'} no price (counted as free); give "
        "every chat model a price, or use mode: keep"
    ]


# (what the request holds, the model's flag, the rule condition that routes on it)
_CAPABILITIES = (("images", "vision", "has_images"), ("tools", "tools", "has_tools"))


def _capability_gaps(registry: Registry) -> list[str]:
    """A route (or the default) none of whose models take images (or tools), in a pool
    where some model does: dispatch only skips within the chain, so such a request routed
    there is refused with a 400 that another model of the pool would have answered. A rule
    that sends every such request elsewhere closes the gap; a rule that sends them to a
    model declaring it takes none is a mistake of its own."""
    out: list[str] = []
    routes = {route.name: route for route in registry.routes}
    for holds, flag, condition in _CAPABILITIES:
        takes = {
            name
            for name, model in registry.models.items()
            if model.kind == "chat" and _takes(registry, name, flag)
        }
        if not takes:
            continue  # the pool takes none: refusing them is what the registry says
        covered = False
        for i, rule in enumerate(registry.rules):
            if getattr(rule.when, condition) is not True:
                continue
            reach = _rule_reach(rule, routes)
            if not reach & takes:
                s = "s" if len(reach) == 1 else ""
                why = (
                    f"take{s} none ({flag}: false, or served by llamacpp)"
                    if _local(registry, reach)
                    else f"declare{s} {flag}: false"
                )
                out.append(
                    f"rules[{i}]: sends requests with {holds} to {_names(reach)}, which {why}"
                )
            elif _only_condition(rule, condition):
                covered = True
        if covered:
            continue
        rule_hint = f"a rule (when: {{{condition}: true}})"
        hint = f"add one to its policy.fallback, or route them with {rule_hint}"
        places: list[tuple[str, Route | Default]] = [
            (f"routes[{i}]", route) for i, route in enumerate(registry.routes)
        ]
        places.append(("default", registry.default))
        for where, place in places:
            reach = _reach(place)
            if not reach & takes:
                out.append(
                    f"{where}: none of its models ({_names(reach)}) takes {holds} ({flag}: "
                    f"false{', or served by llamacpp' if _local(registry, reach) else ''}): a "
                    f"request with {holds} sent here gets a 400, though {_names(takes)} would "
                    f"take it; {hint}"
                )
    return out


def _takes(registry: Registry, name: str, flag: str) -> bool:
    """Whether the model `name` is sent requests with what `flag` names: not when it
    declares `flag` false, nor when llama.cpp in this process alone serves it (text
    only, no tools)."""
    return getattr(registry.models[name], flag) is not False and not _local(registry, {name})


def _local(registry: Registry, names: set[str]) -> bool:
    """Whether one of `names` is served by llamacpp providers alone."""
    return any(
        all(registry.providers[t.provider].kind == "llamacpp" for t in model.targets())
        for model in (registry.models.get(name) for name in names)
        if model is not None
    )


def _reach(place: Route | Default) -> set[str]:
    """Every model that may serve a request a route (or the default) is sent: not its
    `context_fallback` or `content_fallback`, which only a refusal for length or content
    reaches, never a request with images or tools the others do not take."""
    names = {place.target, *place.policy.fallback}
    if place.reasoning_target is not None:
        names.add(place.reasoning_target)
    if isinstance(place, Route):
        if place.cascade is not None:
            names.update(tier.model for tier in place.cascade.tiers)
    elif place.difficulty is not None:
        names.update((place.difficulty.strong, place.difficulty.weak))
    return names


def _rule_reach(rule: Rule, routes: dict[str, Route]) -> set[str]:
    if rule.target is not None:
        return {rule.target}
    return _reach(routes[rule.route]) if rule.route in routes else set()


def _only_condition(rule: Rule, condition: str) -> bool:
    """Whether `condition` is the rule's only condition, so it takes every request that
    meets it."""
    return all(value is None for name, value in rule.when if name != condition)


def _names(names: set[str]) -> str:
    return ", ".join(sorted(names))


def _unread_examples(registry: Registry) -> list[str]:
    """Examples mostly in scripts the encoder does not read: requests like them are not
    scored by the intent layer (it is unsure of them), so these examples teach it
    nothing it will use. One warning per route (and one for out of scope)."""
    from llmroute.assemble import encoder_scripts, script_check_for  # numpy: only here

    reads = encoder_scripts(registry.encoder)
    if reads is None:
        return []
    check = script_check_for(registry.encoder, reads)
    groups = [(f"routes[{i}].examples", route.examples) for i, route in enumerate(registry.routes)]
    groups.append(("intent.out_of_scope", tuple(registry.intent.out_of_scope)))
    out = []
    for where, texts in groups:
        unread = [(j, found) for j, text in enumerate(texts) if (found := check.unread(text))]
        if not unread:
            continue
        j, found = unread[0]
        some = f"{len(unread)} of {len(texts)} are" if len(texts) > 1 else "it is"
        out.append(
            f"{where}[{j}]: {some} mostly in a script the encoder does not read ({found} of "
            f"the letters of [{j}]); the intent layer is unsure of such requests and does not "
            "score them, so these examples are never matched: if the encoder reads it, name it "
            f"in encoder.scripts (reads now: {', '.join(reads)})"
        )
    return out


def _example_conflicts(registry: Registry) -> list[str]:
    """The same example (near enough) taught as two routes, or as a route and as out of
    scope: the intent head is trained on both labels for one text, and decides it by
    whichever weighs more."""
    seen: dict[str, tuple[str, str]] = {}  # key -> (where, whose)
    out = []
    entries = [
        (f"routes[{i}].examples[{j}]", f"route {route.name!r}", text)
        for i, route in enumerate(registry.routes)
        for j, text in enumerate(route.examples)
    ]
    entries += [
        (f"intent.out_of_scope[{j}]", "out of scope", text)
        for j, text in enumerate(registry.intent.out_of_scope)
    ]
    for where, whose, text in entries:
        key = _key(text)
        first = seen.get(key)
        if first is None:
            seen[key] = (where, whose)
        elif first[1] != whose:
            out.append(
                f"{where}: {text!r} is also an example of {first[1]} ({first[0]}); the "
                "intent head learns both for one text: keep it in one place"
            )
    return out
