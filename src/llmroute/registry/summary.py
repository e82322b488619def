"""A human summary of a loaded registry, printed by ``llmroute registry check``.

It shows what routing will do (targets, thresholds, fallbacks, rules) so a reviewer can
check a registry change without reading the YAML. Provider headers are not shown: they
may carry credentials.
"""

from __future__ import annotations

from llmroute.money import usd_as_written
from llmroute.registry.loader import LoadedRegistry
from llmroute.registry.schema import (
    BuiltinEncoderSpec,
    Cascade,
    EncoderSpec,
    Gate,
    Model,
    Reasoning,
    Registry,
    RoutePolicy,
    Rule,
    RuleWhen,
)
from llmroute.telemetry.store.url import mask_url

__all__ = ["describe_when", "headline", "summarize"]


def summarize(loaded: LoadedRegistry) -> list[str]:
    """Lines describing file, version, encoder, providers, models, routes, rules, the
    response cache, request limits, client keys and aliases (when configured), default."""
    registry = loaded.registry
    return [
        f"file: {loaded.source}",
        f"version: {loaded.version} (revision {registry.version})",
        f"encoder: {_encoder(registry)}",
        *_providers(registry),
        *_models(registry),
        _intent(registry),
        *_routes(registry),
        *_rules(registry),
        *_state(registry),
        _default(registry),
    ]


def _default(registry: Registry) -> str:
    """The default, with its difficulty router (strong/weak and the dial as written: the
    threshold a `strong_share` gives is read from the router's files, which this does
    not load), fallbacks and reasoning tier."""
    default = registry.default
    line = f"default -> {default.target}"
    spec = default.difficulty
    if spec is not None:
        dial = (
            f"threshold {spec.threshold:g}"
            if spec.threshold is not None
            else f"strong share {spec.strong_share:g}"
        )
        line += f", by difficulty ({spec.router}): {spec.strong} or {spec.weak} at {dial}"
    return line + _chain(default.policy, default.reasoning_target)


def _chain(policy: RoutePolicy, reasoning_target: str | None) -> str:
    """A route's (or the default's) fallbacks, content fallback and reasoning tier."""
    chain = f", fallback {' > '.join(policy.fallback)}" if policy.fallback else ""
    if policy.content_fallback is not None:
        chain += f", content refused -> {policy.content_fallback}"
    if reasoning_target is not None:
        chain += f", reasoning tier {reasoning_target}"
    return chain


def headline(loaded: LoadedRegistry) -> str:
    """One line for a server's start-up log: the file, its version, the pool's size and
    which layers and features are on (`summarize` has the rest)."""
    registry = loaded.registry
    encoder = registry.encoder
    name = f"builtin:{encoder.name}" if isinstance(encoder, BuiltinEncoderSpec) else encoder.model
    on = [
        label
        for label, present in (
            ("safety", registry.safety is not None),
            ("reasoning gate", registry.reasoning is not None),
            ("LLM router", registry.llm_fallback is not None and registry.llm_fallback.enabled),
            ("cascades", any(r.cascade is not None for r in registry.routes)),
            ("response cache", registry.cache is not None and registry.cache.enabled),
            ("conversation affinity", registry.affinity is not None),
            ("stored responses", registry.stored_responses is not None),
            ("batches", registry.batches is not None),
            ("client keys", registry.auth is not None),
            ("shadow", registry.shadow is not None),
        )
        if present
    ]
    counts = ", ".join(
        f"{n} {word}{'' if n == 1 else 's'}"
        for n, word in (
            (len(registry.routes), "route"),
            (len(registry.models), "model"),
            (len(registry.rules), "rule"),
        )
    )
    return f"registry {loaded.source} version {loaded.version}: {counts}, encoder {name}" + (
        f"; {', '.join(on)}" if on else ""
    )


def _encoder(registry: Registry) -> str:
    spec = registry.encoder
    if isinstance(spec, BuiltinEncoderSpec):
        return (
            f"builtin:{spec.name} (max_tokens {spec.max_tokens}, truncate {spec.truncate}, "
            f"{_scripts(spec)})"
        )
    dims = f", dimensions {spec.dimensions}" if spec.dimensions else ""
    scripts = f", {_scripts(spec)}" if spec.scripts is not None else ""
    return f"{spec.model} at {mask_url(spec.base_url)}{dims}{scripts}{_key(spec.api_key_env)}"


def _scripts(spec: EncoderSpec) -> str:
    """The scripts the intent layer takes the encoder to read (docs/encoders.md)."""
    if spec.scripts is None and isinstance(spec, BuiltinEncoderSpec):
        from llmroute.encoders.scripts import BUILTIN_SCRIPTS

        return f"reads {', '.join(BUILTIN_SCRIPTS)}"
    if spec.scripts is None or spec.scripts == "any":
        return "reads any script"
    return f"reads {', '.join(spec.scripts)}"


def _key(env: str | None) -> str:
    return f" (key from ${env})" if env else " (no key)"


def _providers(registry: Registry) -> list[str]:
    lines = [f"providers: {len(registry.providers)}"]
    for name, p in registry.providers.items():
        if p.kind == "llamacpp":
            threads = p.n_threads or "all cores"
            lines.append(
                f"  {name}: llamacpp in-process (n_ctx {p.n_ctx}, threads {threads}, "
                f"{p.max_concurrency} at once, max_tokens {p.max_tokens})"
            )
        elif p.kind == "echo":
            said = "a fixed reply" if p.reply is not None else "the last user message"
            delay = f" after {p.delay_s:g} s" if p.delay_s else ""
            lines.append(f"  {name}: echo in-process (no model: answers {said}{delay})")
        else:
            lines.append(f"  {name}: {p.kind} {mask_url(str(p.base_url))}{_key(p.api_key_env)}")
    return lines


def _models(registry: Registry) -> list[str]:
    lines = [f"models: {len(registry.models)} (price in USD per 1M tokens, input/output)"]
    for name, model in registry.models.items():
        lines.append(
            f"  {name}: {','.join(model.provider_names())}/{model.model}  {_model_extras(model)}"
        )
    return lines


def _param_extras(model: Model) -> list[str]:
    """The request parameters the model is given, renamed or spared."""
    parts = []
    if model.params:
        parts.append("params " + ", ".join(model.params))
    if model.rename_params:
        parts.append("renames " + ", ".join(f"{a}->{b}" for a, b in model.rename_params.items()))
    if model.drop_params:
        parts.append("drops " + ", ".join(model.drop_params))
    return parts


def _price(model: Model) -> list[str]:
    """Its price; an embedding or rerank model (served on its own endpoint, never routed
    to) says which it is, and a price per search."""
    if model.kind == "chat":
        return [f"{usd_as_written(model.price.input)}/{usd_as_written(model.price.output)}"]
    parts = [f"{usd_as_written(model.price.input)} input", model.kind]
    if model.price.search is not None:
        parts.append(f"{usd_as_written(model.price.search)} per 1,000 searches")
    return parts


def _model_extras(model: Model) -> str:
    parts = _price(model)
    if model.context_window is not None:
        parts.append(f"context {model.context_window}")
    if model.vision is False:
        parts.append("no images")
    if model.tools is False:
        parts.append("no tools")
    if model.text_completions:
        parts.append("raw text completions")
    parts += _param_extras(model)
    if model.reasoning is False:
        parts.append("does not think")
    elif model.reasoning is not None:
        parts.append(_reasoning_summary(model.reasoning))
    for limit, shown in (("rpm", "rpm"), ("tpm", "tpm"), ("max_in_flight", "in flight")):
        values = [getattr(t, limit) for t in model.targets()]
        if any(v is not None for v in values):
            parts.append(f"{shown} " + "/".join("-" if v is None else str(v) for v in values))
    if model.balance is not None and len(model.targets()) > 1:
        parts.append(f"balance {model.balance}")
    if model.budget is not None:
        hard = "hard " if model.budget.hard else ""
        parts.append(f"{hard}budget {usd_as_written(model.budget.usd)} per {model.budget.period}")
    return ", ".join(parts)


def _reasoning_summary(reasoning: Reasoning) -> str:
    if reasoning.param == "enable_thinking":  # on or off: no effort, no budget
        return "reasoning enable_thinking"
    if reasoning.budget_tokens is not None:
        return f"reasoning budget {reasoning.budget_tokens} tokens"
    return f"reasoning effort {reasoning.effort or 'medium'}"


def _intent(registry: Registry) -> str:
    intent = registry.intent
    method = f"knn (k={intent.k})" if intent.method == "knn" else intent.method
    oos = f", {len(intent.out_of_scope)} out-of-scope examples" if intent.out_of_scope else ""
    return f"intent: {method}, threshold {intent.threshold:g}, window {intent.window}{oos}"


def _routes(registry: Registry) -> list[str]:
    lines = [f"routes: {len(registry.routes)}"]
    for route in registry.routes:
        chain = _chain(route.policy, route.reasoning_target)
        cascade = "" if route.cascade is None else f", {_cascade(route.cascade)}"
        lines.append(
            f"  {route.name} -> {route.target}  threshold {registry.threshold(route):g}, "
            f"{len(route.examples)} examples{chain}{cascade}"
        )
    return lines


def _cascade(cascade: Cascade) -> str:
    """Its tiers, each with its own gates when it has them, and the cascade's gates: the
    escalation decides which model a request costs, not the route's target alone."""
    tiers = " > ".join(
        tier.model + ("" if tier.gates is None else f" [{_kinds(tier.gates)}]")
        for tier in cascade.tiers
    )
    notes = []
    if any(tier.gates is None for tier in cascade.tiers[:-1]):  # else they apply to none
        notes.append(f"gates {_kinds(cascade.gates)}")
    if cascade.stream == "passthrough":
        notes.append("streams ungated: passthrough")
    return f"cascade {tiers}" + (f" ({'; '.join(notes)})" if notes else "")


def _kinds(gates: tuple[Gate, ...]) -> str:
    return ", ".join(gate.kind for gate in gates)


def _state(registry: Registry) -> list[str]:
    """The response cache, where limits are counted and where breaker openings are
    shared, when the registry has them (URLs with their passwords masked;
    ``$LLMROUTE_CACHE_URL`` may override the cache's)."""
    # here, not at the top: every `load_registry` imports this module, and the state
    # package brings the response cache, limits and Redis code that `route` never runs
    from llmroute.state.stores import has_limits

    lines = []
    cache = registry.cache
    if cache is not None:
        where = mask_url(cache.url) if cache.enabled else "off"
        routes = f", routes {', '.join(cache.routes)}" if cache.routes is not None else ""
        semantic = cache.semantic
        meaning = "" if semantic is None else f", semantic >= {semantic.threshold:g}"
        lines.append(f"cache: {where}, ttl {cache.ttl_s:g} s{routes}{meaning}")
    if has_limits(registry):
        lines.append(f"limits counted in: {mask_url(registry.dispatch.limits.url)}")
    affinity = registry.affinity
    if affinity is not None:
        lines.append(
            f"conversation affinity: {affinity.mode}, kept {affinity.ttl_s:g} s, "
            f"in {mask_url(affinity.url)}"
        )
    kept = registry.stored_responses
    if kept is not None:
        bound = [
            f"{n} {what}"
            for n, what in ((kept.max_key_responses, "responses"), (kept.max_key_bytes, "bytes"))
            if n is not None
        ]
        lines.append(
            f"responses kept {kept.ttl_s:g} s, in {mask_url(kept.url)}"
            + (f", each key at most {' and '.join(bound)}" if bound else "")
        )
    batches = registry.batches
    if batches is not None:
        quota = [
            f"{n} {what}"
            for n, what in (
                (batches.max_key_files, "files"),
                (batches.max_key_bytes, "bytes"),
                (batches.max_key_batches, "batches running"),
            )
            if n is not None
        ]
        lines.append(
            f"batches: {batches.concurrency} requests at a time, {batches.max_running} batches "
            f"per process, kept {batches.ttl_s:g} s, in {mask_url(batches.url)}"
            + (f", each key at most {' and '.join(quota)}" if quota else "")
        )
    breaker = registry.dispatch.breaker
    if breaker.enabled and breaker.url != "memory":
        lines.append(f"breaker openings shared in: {mask_url(breaker.url)}")
    if registry.auth is not None:
        keys = [
            k.name
            + (" (admin)" if k.admin else "")
            + (f" rpm {k.rpm}" if k.rpm else "")
            + (f" tpm {k.tpm}" if k.tpm else "")
            + (f" pool [{', '.join(k.pool)}]" if k.pool else "")
            + (
                f" {'hard ' * k.budget.hard}budget {usd_as_written(k.budget.usd)} "
                f"per {k.budget.period}"
                if k.budget is not None
                else ""
            )
            for k in registry.auth.keys
        ]
        public = ", /metrics public" if registry.auth.public_metrics else ""
        lines.append(f"client keys: {', '.join(keys)}{public}")
    if registry.aliases:
        pairs = ", ".join(f"{alias} -> {target}" for alias, target in registry.aliases.items())
        lines.append(f"aliases: {pairs}")
    return lines


def _rules(registry: Registry) -> list[str]:
    if not registry.rules:
        return ["rules: none"]
    return [f"rules: {len(registry.rules)} (first match wins)"] + [
        f"  {rule.name}: {describe_when(rule.when)} -> {_destination(rule)}"
        for rule in registry.rules
    ]


def _destination(rule: Rule) -> str:
    return f"route {rule.route}" if rule.route is not None else f"model {rule.target}"


def describe_when(when: RuleWhen) -> str:
    """A rule's conditions in one line, e.g. ``header x-tenant=acme and has_tools``."""
    parts: list[str] = []
    if when.regex is not None:
        parts.append("regex " + " | ".join(when.regex))
    if when.keywords is not None:
        parts.append("keywords " + ", ".join(when.keywords))
    for label, mapping in (("header", when.header), ("metadata", when.metadata)):
        for key, value in (mapping or {}).items():
            parts.append(f"{label} {key} present" if value == "*" else f"{label} {key}={value}")
    if when.has_tools is not None:
        parts.append("has_tools" if when.has_tools else "no tools")
    if when.has_images is not None:
        parts.append("has_images" if when.has_images else "no images")
    if when.min_tokens is not None:
        parts.append(f">= {when.min_tokens} tokens")
    if when.max_tokens is not None:
        parts.append(f"<= {when.max_tokens} tokens")
    return " and ".join(parts)
