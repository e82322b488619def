"""`summarize`: what `llmroute registry check` prints."""

from __future__ import annotations

from registry_helpers import VALID, replace_line

from llmroute.registry import parse_registry, summarize


def test_summary_names_every_section() -> None:
    loaded = parse_registry(VALID, source="reg.yaml")
    lines = summarize(loaded)
    assert lines[0] == "file: reg.yaml"
    assert lines[1] == f"version: {loaded.version} (revision 3)"
    assert lines[2] == "encoder: builtin:static (max_tokens 256, truncate head, reads latin)"
    text = "\n".join(lines)
    for expected in (
        "providers: 2",
        "  local: openai http://127.0.0.1:8001/v1 (no key)",
        "  openai: openai https://api.openai.com/v1 (key from $OPENAI_API_KEY)",
        "models: 2 (price in USD per 1M tokens, input/output)",
        "  small: local/qwen2.5-7b-instruct  $0.1/$0.1",
        "  large: openai/gpt-4.1  $2/$8, context 1047576, reasoning budget 8000 tokens",
        "intent: knn (k=3), threshold 0.4, window 1",
        "routes: 2",
        "  code -> small  threshold 0.55, 2 examples, fallback large",
        "  chitchat -> small  threshold 0.4, 2 examples",
        "rules: 2 (first match wins)",
        "  pinned-tenant: header x-tenant=acme -> model large",
        "  traces: regex Traceback \\(most recent and >= 3 tokens -> route code",
    ):
        assert expected in lines, f"{expected!r} not in\n{text}"
    assert lines[-1] == "default -> small"


def test_summary_of_remote_encoder_and_other_conditions() -> None:
    text = replace_line(
        VALID,
        2,
        "encoder: {kind: openai, base_url: 'http://e:8080/v1', model: bge, dimensions: 256, "
        "headers: {x-tenant: acme}}",
    )
    text = replace_line(
        text,
        34,
        "when: {keywords: [k8s, helm], header: {x-beta: '*'}, metadata: {tier: gold}, "
        "has_tools: false, has_images: true, max_tokens: 50}",
    )
    small = "price: {input: 0.1, output: 0.1}}"
    text = text.replace(
        small,
        small[:-1] + ", vision: false, tools: false, text_completions: true, params: {top_k: 20},"
        " rename_params: {max_tokens: max_completion_tokens}, drop_params: [logprobs]}",
        1,
    )
    lines = summarize(parse_registry(text))
    assert "encoder: bge at http://e:8080/v1, dimensions 256 (no key)" in lines
    assert (
        "  traces: keywords k8s, helm and header x-beta present and metadata tier=gold"
        " and no tools and has_images and <= 50 tokens -> route code"
    ) in lines
    small_line = next(line for line in lines if line.startswith("  small:"))
    assert small_line.endswith(
        "no images, no tools, raw text completions, params top_k,"
        " renames max_tokens->max_completion_tokens,"
        " drops logprobs"
    ), small_line


def test_summary_without_rules() -> None:
    text = VALID.split("rules:")[0]
    assert "rules: none" in summarize(parse_registry(text))


def test_summary_shows_cache_limits_and_budgets_without_passwords() -> None:
    small = "price: {input: 0.1, output: 0.1}}"
    assert small in VALID
    text = VALID.replace(
        small, small[:-1] + ", rpm: 600, max_in_flight: 8, budget: {usd: 25, period: month}}", 1
    )
    text += "cache: {url: 'redis://:hunter2@cache:6379/0', ttl_s: 60, routes: [code],"
    text += " semantic: {threshold: 0.97}}\n"
    text += "dispatch:\n  limits: {url: 'redis://:hunter2@limits:6379/1'}\n"
    text += "  breaker: {url: 'redis://:hunter2@limits:6379/2'}\n"
    text += "auth: {keys: [{name: ops, key_env: OPS_KEY, admin: true}, "
    text += "{name: team-a, key_env: A_KEY, rpm: 60, tpm: 900, pool: [small], "
    text += "budget: {usd: 50, period: day}}], "
    text += "public_metrics: true}\n"
    lines = summarize(parse_registry(text))
    joined = "\n".join(lines)
    assert "hunter2" not in joined
    small = next(line for line in lines if line.startswith("  small:"))
    assert small.endswith("rpm 600, in flight 8, budget $25 per month"), small
    assert "cache: redis://:***@cache:6379/0, ttl 60 s, routes code, semantic >= 0.97" in lines
    assert "limits counted in: redis://:***@limits:6379/1" in lines
    assert "breaker openings shared in: redis://:***@limits:6379/2" in lines
    assert (
        "client keys: ops (admin), team-a rpm 60 tpm 900 pool [small] budget $50 per "
        "day, /metrics public"
    ) in lines
    assert lines[-1] == "default -> small"
    hard = text.replace("period: month}", "period: month, hard: true}, max_output_tokens: 900", 1)
    small = next(line for line in summarize(parse_registry(hard)) if line.startswith("  small:"))
    assert small.endswith("in flight 8, hard budget $25 per month"), small


def test_summary_says_prices_and_budgets_as_written_never_with_an_exponent() -> None:
    small = "price: {input: 0.1, output: 0.1}}"
    tiny = "price: {input: 0.000001, output: 0.01875}, budget: {usd: 0.000001, period: day}}"
    text = VALID.replace(small, tiny, 1)
    text += "auth: {keys: [{name: a, key_env: A_KEY, budget: {usd: 1e-7, period: day}}]}\n"
    lines = summarize(parse_registry(text))
    small_line = next(line for line in lines if line.startswith("  small:"))
    assert "$0.000001/$0.01875" in small_line and "budget $0.000001 per day" in small_line
    assert any(line.endswith("a budget $0.0000001 per day") for line in lines), lines
    assert "e-0" not in "\n".join(lines)


def test_summary_lists_aliases() -> None:
    text = VALID + 'aliases:\n  gpt-4o: auto\n  "claude-*": code\n'
    lines = summarize(parse_registry(text, source="reg.yaml"))
    assert "aliases: gpt-4o -> auto, claude-* -> code" in lines


def test_summary_says_how_each_model_thinks() -> None:
    text = replace_line(VALID, 13, "reasoning: {effort: low}")
    text = replace_line(text, 7, "small: {provider: local, model: q, reasoning: false}")
    lines = summarize(parse_registry(text, source="reg.yaml"))
    assert "  large: openai/gpt-4.1  $2/$8, context 1047576, reasoning effort low" in lines
    assert "  small: local/q  $0/$0, does not think" in lines
    shorthand = replace_line(VALID, 13, "reasoning: true")
    model = parse_registry(shorthand, source="reg.yaml").registry.models["large"]
    assert model.reasoning is not False and model.reasoning is not None
    assert model.reasoning.effort is None and model.reasoning.turn_off


def test_summary_shows_thinking_switches_tiers_and_the_difficulty_default() -> None:
    """`registry check` said "reasoning effort medium" of an enable_thinking model, and
    nothing of reasoning tiers or of a default that routes by difficulty."""
    text = replace_line(VALID, 13, "reasoning: {param: enable_thinking}")
    lines = summarize(parse_registry(text, source="reg.yaml"))
    assert any(line.endswith("reasoning enable_thinking") for line in lines)
    assert "default: {target: small, description: everything else}" in text
    text = text.replace(
        "default: {target: small, description: everything else}",
        "default:\n  target: small\n  reasoning_target: large\n"
        "  difficulty: {router: routers/mlp, strong: large, weak: small, strong_share: 0.3}",
    )
    assert summarize(parse_registry(text, source="reg.yaml"))[-1] == (
        "default -> small, by difficulty (routers/mlp): large or small at strong share 0.3, "
        "reasoning tier large"
    )


def test_headline_is_one_line_with_the_features_on() -> None:
    """What `llmroute serve` logs when it starts serving a registry."""
    from pathlib import Path

    from llmroute.registry import load_registry
    from llmroute.registry.summary import headline

    example = Path(__file__).resolve().parents[2] / "examples" / "registry.yaml"
    loaded = load_registry(example)
    registry = loaded.registry
    line = headline(loaded)
    assert "\n" not in line and line.startswith(f"registry {example} version {loaded.version}: ")
    counts = f"{len(registry.routes)} routes, {len(registry.models)} models"
    assert counts in line and "encoder builtin:minilm-int8; " in line
    assert line.endswith("safety, reasoning gate")  # what the example turns on
    plain = headline(parse_registry(VALID, source="reg.yaml"))
    assert plain.startswith("registry reg.yaml version ") and "encoder builtin:static" in plain


def test_summary_shows_a_routes_content_fallback() -> None:
    text = VALID.replace(
        "fallback: [large], retries: 1", "fallback: [large], content_fallback: large"
    )
    lines = summarize(parse_registry(text))
    assert (
        "  code -> small  threshold 0.55, 2 examples, fallback large, content refused -> large"
        in lines
    )


def test_summary_says_which_models_embed_or_rerank() -> None:
    from pathlib import Path

    echo = Path(__file__).resolve().parents[2] / "examples" / "echo.yaml"
    text = "\n".join(summarize(parse_registry(echo.read_text(), source="echo.yaml")))
    assert "embed: echo/echo-embed  $0.02 input, embedding" in text
    assert "rerank: echo/echo-rerank  $0.02 input, rerank" in text
    searched = echo.read_text().replace(
        "kind: rerank, price: {input: 0.02}", "kind: rerank, price: {search: 2}"
    )
    lines = summarize(parse_registry(searched))
    assert any(line.endswith("$0 input, rerank, $2 per 1,000 searches") for line in lines)


def test_summary_masks_credentials_in_base_urls() -> None:
    # (a base URL with a query is refused: the requests' paths would follow it)
    text = VALID.replace("http://127.0.0.1:8001/v1", "http://user:hunter2@127.0.0.1:8001/v1")
    text = replace_line(
        text, 2, "encoder: {kind: openai, base_url: 'http://u:pw2@e/v1', model: bge}"
    )
    shown = "\n".join(summarize(parse_registry(text, source="reg.yaml")))
    assert "hunter2" not in shown and "pw2" not in shown
    assert "http://user:***@127.0.0.1:8001/v1" in shown


def test_summary_shows_the_defaults_fallbacks() -> None:
    text = VALID.replace(
        "default: {target: small, description: everything else}",
        "default: {target: small, policy: {fallback: [large], content_fallback: large}}",
    )
    assert text != VALID
    lines = summarize(parse_registry(text, source="reg.yaml"))
    assert lines[-1] == "default -> small, fallback large, content refused -> large"


def test_summary_shows_a_routes_cascade() -> None:
    """A route with a cascade read `code -> small` alone: the escalation to `large`, which
    decides what a request costs, was left out of what a reviewer reads."""
    text = VALID.replace(
        "fallback: [large], retries: 1",
        "fallback: [large], retries: 1}\n    cascade: {tiers: [small, large]",
    )
    lines = summarize(parse_registry(text))
    expected = (
        "  code -> small  threshold 0.55, 2 examples, fallback large, "
        "cascade small > large (gates heuristic)"
    )
    assert expected in lines, "\n".join(lines)
    gated = text.replace(
        "cascade: {tiers: [small, large]",
        "cascade: {tiers: [{model: small, gates: [heuristic, {kind: learned}]}, large], "
        "stream: passthrough",
    )
    assert (
        "  code -> small  threshold 0.55, 2 examples, fallback large, cascade small "
        "[heuristic, learned] > large (streams ungated: passthrough)"
    ) in summarize(parse_registry(gated))
