"""One test per kind of registry error: each names the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from registry_helpers import VALID, assert_points_at, errors_of, one_error, replace_line

from llmroute.errors import ConfigError
from llmroute.layers.llm_router import NONE
from llmroute.registry import ConfigErrors, load_registry, parse_registry
from llmroute.registry.lint import lint
from llmroute.registry.schema import MAX_NAME_CHARS


def test_yaml_syntax_error_names_the_line() -> None:
    error = one_error("routes:\n  - name: x\n    examples: [a, b\n")
    assert error.file == "reg.yaml" and error.line == 4
    assert str(error).startswith("reg.yaml:4: invalid YAML: ")


def test_a_nul_byte_or_deep_nesting_is_one_yaml_error_with_its_line() -> None:
    nul = one_error("providers: {}\nmodels: {a: \x00}\n")
    assert (nul.line, nul.message) == (2, "invalid YAML: unacceptable character #x0000")
    deep = one_error("routes: " + "[" * 600 + "]" * 600 + "\n")
    assert (deep.line, deep.message) == (1, "invalid YAML: nested too deeply")


def test_the_nesting_refused_is_the_same_on_every_python() -> None:
    """101 levels is refused at the line that passes 100, 100 is read: the limit is ours,
    not the interpreter's (3.11 refused 500 levels, 3.12 passed 900 on to validation)."""
    deep = one_error("routes:\n" + "  [\n" * 120 + "  " + "]" * 120 + "\n")
    assert (deep.line, deep.message) == (101, "invalid YAML: nested too deeply")
    errors = errors_of("routes:\n" + "  [\n" * 99 + "  " + "]" * 99 + "\n", "reg.yaml")
    assert all("nested" not in str(error) for error in errors)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("mysql://x/y", "unsupported telemetry URL"),
        ("sqlite://x.db", "three slashes"),
        ("sqlite:///", "names no file"),
    ],
)
def test_a_telemetry_url_serve_would_refuse_is_refused_at_load(url: str, said: str) -> None:
    """`registry check` and a reload accepted what `serve` refused at start."""
    error = one_error(VALID + f"telemetry: {{url: '{url}'}}\n")
    assert error.field == "telemetry.url" and said in error.message and error.line
    off = parse_registry(VALID + f"telemetry: {{enabled: false, url: '{url}'}}\n")
    assert off.registry.telemetry.url == url  # a log that is off is not opened


def test_tabs_and_bad_indentation_are_yaml_errors() -> None:
    error = one_error(replace_line(VALID, 16, "\tk: 3"))
    assert (error.line, error.field) == (16, None)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(text: str) -> None:
    error = one_error(text)
    assert str(error) == (
        "reg.yaml:1: the registry is empty; it needs at least providers, models, routes and default"
    )


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just text\n", "str")])
def test_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    error = one_error(text)
    assert error.line == 1 and "top level must be a mapping" in error.message
    assert error.message.endswith(f"not a {kind}")


def test_duplicate_key_is_reported_not_silently_dropped() -> None:
    text = replace_line(VALID, 23, "threshold: 0.55\n    target: small")  # target twice
    error = one_error(text)
    assert_points_at(error, 24, "routes[0].target", "duplicate key 'target'", "first on line 22")


def test_duplicate_top_level_key() -> None:
    error = one_error(VALID + "default: {target: large}\n")
    assert_points_at(error, 36, "default", "duplicate key 'default'", "first on line 28")


def test_unknown_key_suggests_the_closest() -> None:
    error = one_error(replace_line(VALID, 23, "tresholds: 0.55"))
    assert_points_at(
        error,
        23,
        "routes[0].tresholds",
        "unknown key 'tresholds' (did you mean 'threshold'?)",
        "allowed keys: name, description, examples, target, reasoning_target, cascade, "
        "threshold, policy",
    )


@pytest.mark.parametrize(
    ("line", "new", "field", "said"),
    [
        (
            4,
            "local: {kind: openai, api_base: 'http://127.0.0.1:8001/v1'}",
            "providers.local.api_base",
            "unknown key 'api_base' (did you mean 'base_url'?)",
        ),
        (
            5,
            "openai: {kind: openai, max_retries: 3}",
            "providers.openai.max_retries",
            "retries are set in dispatch.retries.attempts, or a route's policy.retries",
        ),
    ],
)
def test_other_tools_names_for_a_key_are_told_ours(
    line: int, new: str, field: str, said: str
) -> None:
    """LiteLLM's names: 'did you mean' found nothing for api_base, and offered
    'max_tokens' (a llamacpp provider's) for max_retries."""
    assert_points_at(one_error(replace_line(VALID, line, new)), line, field, said)


@pytest.mark.parametrize(
    ("line", "new", "field"),
    [
        (5, "openai: {kind: openai, retries: 3}", "providers.openai.retries"),
        (7, "small: {provider: local, model: q, retries: 3}", "models.small.retries"),
        (
            7,
            "small: {model: q, deployments: [{provider: local, retries: 3}]}",
            "models.small.deployments[0].retries",
        ),
    ],
)
def test_retries_on_a_provider_or_a_model_says_where_retries_go(
    line: int, new: str, field: str
) -> None:
    """Our own name put on a provider, a model or a deployment was told only "unknown key"
    and the section's keys, though LiteLLM's names for it (`max_retries`, `num_retries`)
    there were told where retries are set."""
    assert_points_at(
        one_error(replace_line(VALID, line, new)),
        line,
        field,
        "unknown key 'retries': retries are set in dispatch.retries.attempts, or a route's "
        "policy.retries",
    )


@pytest.mark.parametrize(
    ("new", "said"),
    [
        (
            "fallbacks: [large]",
            "a route's fallback goes under its policy (policy: {fallback: ...})",
        ),
        ("fallback: [large]", "a route's fallback goes under its policy (policy: {fallback: ...})"),
        ("num_retries: 2", "a route's retries goes under its policy (policy: {retries: ...})"),
        ("timeout_s: 30", "a route's timeout_s goes under its policy (policy: {timeout_s: ...})"),
    ],
)
def test_a_policy_key_written_on_the_route_says_where_it_goes(new: str, said: str) -> None:
    """LiteLLM's `fallbacks` beside a route's target was told only the route's own keys
    (`fallback` offered nothing: the route has no such key, its policy has)."""
    error = one_error(replace_line(VALID, 23, new))
    key = new.partition(":")[0]
    assert_points_at(error, 23, f"routes[0].{key}", f"unknown key {key!r}: {said}")
    assert "allowed keys: name, description" in error.message


@pytest.mark.parametrize(
    ("new", "field", "said"),
    [
        (
            "small: {provider: local, model: q, api_key: sk-live-0123456789abcdef}",
            "models.small.api_key",
            "A model's key is its provider's: put it in an environment variable and name that "
            "with the provider's api_key_env",
        ),
        (
            "small: {provider: local, model: q, api_base: 'http://127.0.0.1:8001/v1'}",
            "models.small.api_base",
            "unknown key 'api_base': a model's server is its provider's base_url",
        ),
        (
            "small: {model: q, deployments: [{provider: local, api_key: sk-live-0123456789}]}",
            "models.small.deployments[0].api_key",
            "A model's key is its provider's",
        ),
    ],
)
def test_litellm_s_key_or_server_on_a_model_says_they_are_the_provider_s(
    new: str, field: str, said: str
) -> None:
    """LiteLLM's model_list gives each model its api_key and api_base: the model said only
    "unknown key 'api_key'" (the provider's message about secrets did not apply there)."""
    error = one_error(replace_line(VALID, 7, new))
    assert_points_at(error, 7, field, said)
    assert "sk-live" not in str(error)


def test_unknown_key_without_near_miss_lists_allowed_keys() -> None:
    error = one_error(VALID + "observability: {sink: sqlite}\n")
    assert_points_at(
        error, 36, "observability", "unknown key 'observability'; allowed keys: version,"
    )
    assert "did you mean" not in error.message


def test_unknown_key_deep_inside_a_rule() -> None:
    error = one_error(replace_line(VALID, 31, "when: {headers: {X-Tenant: acme}}"))
    assert_points_at(error, 31, "rules[0].when.headers", "did you mean 'header'?")


def test_literal_api_key_is_rejected_without_echoing_it() -> None:
    secret = "sk-proj-abcdef1234567890"
    text = replace_line(
        VALID, 5, f"openai: {{kind: openai, base_url: https://x.example/v1, api_key: {secret}}}"
    )
    error = one_error(text)
    assert_points_at(error, 5, "providers.openai.api_key", "environment variable", "api_key_env")
    assert secret not in str(error)


@pytest.mark.parametrize(
    ("header", "hint"),
    [
        ("Authorization", "api_key_env"),
        ("x-api-key", "headers_env"),
        ("Ocp-Apim-Subscription-Key", "headers_env"),
        ("X-Auth-Token", "headers_env"),
    ],
)
def test_a_credential_in_plain_headers_is_rejected_without_echoing_it(
    header: str, hint: str
) -> None:
    """`api_key:` was refused, but the same key written as a plain header loaded, and
    sat in a file that is committed and diffed."""
    secret = "Bearer sk-proj-abcdef1234567890"
    text = replace_line(
        VALID,
        5,
        f"openai: {{kind: openai, base_url: https://x.ex/v1, headers: {{{header}: '{secret}'}}}}",
    )
    error = one_error(text)
    assert_points_at(error, 5, f"providers.openai.headers.{header}", "credential", hint)
    assert "sk-proj" not in str(error)
    encoder = replace_line(
        VALID,
        2,
        f"encoder: {{kind: openai, base_url: 'http://e/v1', model: m, headers: {{{header}: s}}}}",
    )
    assert_points_at(one_error(encoder), 2, f"encoder.headers.{header}", "credential")
    # from the environment, it is how such a header is meant to be set
    from_env = replace_line(
        VALID,
        5,
        f"openai: {{kind: openai, base_url: https://x.ex/v1, headers_env: {{{header}: TOKEN}}}}",
    )
    parse_registry(from_env)


@pytest.mark.parametrize(
    "header",
    [
        "x-portkey-config",
        "x-portkey-provider",
        "x-portkey-trace-id",
        "anthropic-beta",
        "HTTP-Referer",
        "X-Title",
        "OpenAI-Organization",
        "OpenAI-Project",
        "x-goog-user-project",
        "Helicone-Property-Team",
    ],
)
def test_a_header_naming_no_credential_loads(header: str) -> None:
    """The credential rule reads a name's words: "key" is in "portkey", and Portkey's
    x-portkey-config and x-portkey-provider (no secrets) were refused."""
    line = f"openai: {{kind: openai, base_url: https://x.ex/v1, headers: {{{header}: v}}}}"
    parse_registry(replace_line(VALID, 5, line))


@pytest.mark.parametrize("field", ["headers", "headers_env"])
@pytest.mark.parametrize("header", ["Idempotency-Key", "x-idempotency-key"])
def test_an_idempotency_key_for_every_request_is_refused(header: str, field: str) -> None:
    """It was refused as a credential (the word "key"), with a hint to move it to
    headers_env, where one fixed value would have gone with every request: an upstream
    honouring it answers each later request as a retry of the first."""
    text = replace_line(
        VALID, 5, f"openai: {{kind: openai, base_url: https://x.ex/v1, {field}: {{{header}: V}}}}"
    )
    error = one_error(text)
    assert_points_at(error, 5, f"providers.openai.{field}.{header}", "names one request")
    assert "credential" not in str(error)


@pytest.mark.parametrize(
    "header",
    [
        "x-portkey-api-key",
        "Helicone-Auth",
        "x-goog-api-key",
        "PRIVATE-TOKEN",
        "x-apikey",
        "X-AuthToken",
        "X_Access_Token",
        "x-portkey-virtual-key",  # picks a key Portkey stores: as good as the key
    ],
)
def test_a_credential_header_named_in_words_is_refused(header: str) -> None:
    text = replace_line(
        VALID, 5, f"openai: {{kind: openai, base_url: https://x.ex/v1, headers: {{{header}: s}}}}"
    )
    assert_points_at(one_error(text), 5, f"providers.openai.headers.{header}", "credential")


@pytest.mark.parametrize("key", ["model: large", "max_chars: 800"])
def test_a_model_judges_settings_on_an_exact_judge_are_refused(key: str) -> None:
    """They were accepted and ignored: no model judged, and nothing said so."""
    shadow = f"shadow:\n  rate: 0.1\n  reference: large\n  judge: {{kind: exact, {key}}}\n"
    field = key.split(":")[0]
    error = one_error(VALID + shadow)
    assert_points_at(error, 39, f"shadow.judge.{field}", "only applies to the model judge")
    judged = "kind: model" + (", model: small" * (field == "max_chars"))
    parse_registry(VALID + shadow.replace("kind: exact", judged))


def test_secret_in_a_wrongly_typed_key_is_not_echoed() -> None:
    secret = "sk-live-0123456789"
    error = one_error(replace_line(VALID, 5, f"openai: {{kind: openai, api_key_env: [{secret}]}}"))
    assert_points_at(error, 5, "providers.openai.api_key_env", "valid string")
    assert secret not in str(error)


@pytest.mark.parametrize(
    ("line", "new", "field"),
    [
        (22, "target: smal", "routes[0].target"),
        (24, "policy: {fallback: [smal]}", "routes[0].policy.fallback[0]"),
        (24, "policy: {context_fallback: smal}", "routes[0].policy.context_fallback"),
        (24, "policy: {content_fallback: smal}", "routes[0].policy.content_fallback"),
        (28, "default: {target: smal}", "default.target"),
        (32, "target: smal", "rules[0].target"),
    ],
)
def test_unknown_model(line: int, new: str, field: str) -> None:
    error = one_error(replace_line(VALID, line, new))
    assert_points_at(
        error, line, field, "unknown model 'smal' (did you mean 'small'?); models: large, small"
    )


def test_fallback_to_the_route_target_is_an_error() -> None:
    error = one_error(replace_line(VALID, 24, "policy: {fallback: [large, small]}"))
    assert_points_at(error, 24, "routes[0].policy.fallback[1]", "route's own target")


def test_a_reasoning_tier_declared_not_to_think_is_an_error() -> None:
    text = replace_line(VALID, 13, "reasoning: false")
    text = replace_line(text, 28, "default: {target: small, reasoning_target: large}")
    error = one_error(text)
    assert_points_at(error, 28, "default.reasoning_target", "'reasoning: false'")


@pytest.mark.parametrize(
    ("new", "field", "words"),
    [
        (
            "drop_params: [temperature, messages]",
            "drop_params[1]",
            "'messages' is the request's own",
        ),
        ("drop_params: ['']", "drop_params[0]", "an empty name"),
        (
            "rename_params: {max_tokens: stream}",
            "rename_params.max_tokens",
            "'stream' is the request",
        ),
        (
            "rename_params: {max_tokens: max_tokens}",
            "rename_params.max_tokens",
            "renamed to itself",
        ),
        ("rename_params: {a: b, b: c}", "rename_params.a", "renamed to 'b', which is renamed too"),
        (
            "params: {top_p: 1}\n    drop_params: [top_p]",
            "drop_params[0]",
            "dropped but set in params",
        ),
        (
            "rename_params: {max_tokens: max_completion_tokens}\n    drop_params: [max_tokens]",
            "drop_params[0]",
            "dropped and renamed",
        ),
        (
            "rename_params: {max_tokens: max_completion_tokens}\n"
            "    drop_params: [max_completion_tokens]",
            "drop_params[0]",
            "dropped but 'max_tokens' is renamed to it",
        ),
    ],
)
def test_renamed_and_dropped_parameters_are_checked(new: str, field: str, words: str) -> None:
    error = one_error(replace_line(VALID, 12, new))
    assert error.field == f"models.large.{field}", str(error)
    assert words in error.message and error.line is not None and error.line >= 12


def test_unknown_provider() -> None:
    error = one_error(replace_line(VALID, 9, "provider: opnai"))
    assert_points_at(
        error, 9, "models.large.provider", "unknown provider 'opnai' (did you mean 'openai'?)"
    )


def test_rule_naming_an_unknown_route() -> None:
    error = one_error(replace_line(VALID, 35, "route: coding"))
    assert_points_at(
        error, 35, "rules[1].route", "unknown route 'coding'", "routes: code, chitchat"
    )


def test_duplicate_route_names() -> None:
    error = one_error(replace_line(VALID, 25, "- name: code"))
    assert_points_at(error, 25, "routes[1].name", "duplicate route name 'code'", "routes[0]")


def test_duplicate_rule_names() -> None:
    error = one_error(replace_line(VALID, 33, "- name: pinned-tenant"))
    assert_points_at(error, 33, "rules[1].name", "duplicate rule name 'pinned-tenant'")


@pytest.mark.parametrize(
    ("line", "new", "field"),
    [(23, "threshold: 1.5", "routes[0].threshold"), (17, "threshold: -0.1", "intent.threshold")],
)
def test_threshold_out_of_range(line: int, new: str, field: str) -> None:
    error = one_error(replace_line(VALID, line, new))
    assert_points_at(error, line, field, "must be between 0 and 1")


def test_empty_examples() -> None:
    error = one_error(replace_line(VALID, 26, "examples: []"))
    assert_points_at(error, 26, "routes[1].examples", "must not be empty")


def test_blank_and_duplicate_examples() -> None:
    errors = errors_of(replace_line(VALID, 26, 'examples: [hi, "  ", hi]'))
    assert [e.field for e in errors] == ["routes[1].examples[1]", "routes[1].examples[2]"]
    assert_points_at(errors[0], 26, "routes[1].examples[1]", "example must not be empty")
    assert_points_at(errors[1], 26, "routes[1].examples[2]", "duplicate example (same as [0])")


def test_example_on_its_own_line_is_pointed_at() -> None:
    text = replace_line(VALID, 26, "examples:\n      - hi\n      - 42")
    assert_points_at(one_error(text), 28, "routes[1].examples[1]", "valid string", "got an integer")


@pytest.mark.parametrize(
    ("line", "new", "field", "words"),
    [
        (23, "threshold: high", "routes[0].threshold", ("must be a number", "the string 'high'")),
        (16, "k: [3]", "intent.k", ("valid integer", "got a list")),
        (15, "method: neural", "intent.method", ("'linear', 'centroid' or 'knn'",)),
        (26, "examples: {a: b}", "routes[1].examples", ("must be a list", "got a mapping")),
        (
            31,
            "when: {header: [x-tenant]}",
            "rules[0].when.header",
            ("must be a mapping", "got a list"),
        ),
        (1, "version: one", "version", ("must be a number", "the string 'one'")),
        # a model's name: the mapping to write ("must be a mapping (got a string)")
        (28, "default: small", "default", ("must be a mapping: write default: {target: small}",)),
    ],
)
def test_wrong_types(line: int, new: str, field: str, words: tuple[str, ...]) -> None:
    errors = errors_of(replace_line(VALID, line, new))
    assert_points_at(errors[0], line, field, *words)


def test_missing_required_keys_point_at_the_parent() -> None:
    error = one_error(replace_line(VALID, 22, "# no target"))
    assert_points_at(error, 19, "routes[0].target", "missing required key 'target'")
    text = "\n".join(VALID.splitlines()[:27]) + "\n"  # no default, no rules
    assert_points_at(one_error(text), 1, "default", "missing required key 'default'")


def test_invalid_regex_is_named() -> None:
    error = one_error(replace_line(VALID, 34, "when: {regex: ['ok', '(unclosed']}"))
    assert_points_at(error, 34, "rules[1].when.regex[1]", "invalid regular expression '(unclosed'")


def test_global_regex_flags_must_be_scoped() -> None:
    error = one_error(replace_line(VALID, 34, "when: {regex: 'a(?i)b'}"))
    assert_points_at(error, 34, "rules[1].when.regex[0]", "scoped flag group")


@pytest.mark.parametrize(
    ("new", "words"),
    [
        ("when: {}", ("at least one condition",)),
        ("when: {min_tokens: 10, max_tokens: 5}", ("greater than max_tokens",)),
        ("when: {header: {}}", ("must not be empty",)),
    ],
)
def test_bad_rule_conditions(new: str, words: tuple[str, ...]) -> None:
    error = one_error(replace_line(VALID, 34, new))
    assert error.line == 34 and error.field is not None
    assert error.field.startswith("rules[1].when")
    for word in words:
        assert word in error.message


@pytest.mark.parametrize("new", ["target: large\n    route: code", "description: nowhere"])
def test_rule_needs_exactly_one_destination(new: str) -> None:
    error = one_error(replace_line(VALID, 35, new))
    assert_points_at(error, 33, "rules[1]", "exactly one of 'target'")


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("default", "reserved"),
        ("Auto", "reserved"),
        # the route of a request naming a pool model: a route of that name gave every
        # such request its policy and fallbacks (a pinned model is tried alone)
        ("pinned", "reserved"),
        ("my route", "invalid name"),
        ("-x", ""),
    ],
)
def test_route_names(name: str, words: str) -> None:
    error = one_error(replace_line(VALID, 25, f"- name: '{name}'"))
    assert_points_at(error, 25, "routes[1].name", words)


def test_a_route_named_none_beside_the_llm_router_is_refused() -> None:
    """'none' is the LLM router's answer for the default: a route of that name was never
    chosen (its answer sent the request to the default instead)."""
    assert NONE == "none"
    text = replace_line(VALID, 25, "- name: none") + "llm_fallback: {model: large}\n"
    assert_points_at(one_error(text), 25, "routes[1].name", "the LLM router's answer")
    parse_registry(replace_line(VALID, 25, "- name: none"))  # without it, a name as any


def test_model_names_are_checked() -> None:
    text = VALID.replace("  small: {provider", "  'small one': {provider").replace(
        "target: small", "target: 'small one'"
    )
    errors = errors_of(text)
    assert errors[0].field == "models['small one']" and errors[0].line == 7


@pytest.mark.parametrize(
    ("new", "field", "words"),
    [
        ("encoder: builtin:minilm-fp16", "encoder", ("unknown encoder", "builtin:minilm")),
        ("encoder: minilm", "encoder", ("unknown encoder", "kind: openai")),
        ("encoder: {kind: builtin, name: bert}", "encoder.name", ("'minilm'",)),
        (
            "encoder: {kind: builtin, name: minilm, max_tokns: 3}",
            "encoder.max_tokns",
            ("max_tokens",),
        ),
        ("encoder: {name: minilm}", "encoder", ("kind: builtin",)),
        ("encoder: {kind: openai, model: m}", "encoder.base_url", ("missing required key",)),
        ("encoder: {kind: openai, base_url: ftp://x/v1, model: m}", "encoder.base_url", ("http",)),
    ],
)
def test_encoder_errors(new: str, field: str, words: tuple[str, ...]) -> None:
    error = one_error(replace_line(VALID, 2, new))
    assert_points_at(error, 2, field, *words)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        # Azure's per-deployment habit: requests went to /openai/v1?api-version=1/chat/...
        ("https://r.openai.azure.com/openai/v1?api-version=1", ("query", "api-version")),
        ("http://127.0.0.1:8001/v1#top", ("fragment",)),  # requests went to /v1 itself
        # the endpoint pasted whole: requests went to .../chat/completions/chat/completions
        ("http://127.0.0.1:8001/v1/chat/completions", ("/chat/completions", "base")),
        ("https://api.anthropic.com/v1/messages", ("/messages", "base")),
    ],
)
def test_a_base_url_requests_cannot_be_appended_to_is_refused(
    url: str, words: tuple[str, ...]
) -> None:
    """A base URL with a query, a fragment or an endpoint's path loaded, and every
    request went to a garbled or doubled path (a 404, or a 405, from the upstream)."""
    error = one_error(replace_line(VALID, 4, f'local: {{kind: openai, base_url: "{url}"}}'))
    assert_points_at(error, 4, "providers.local.base_url", *words)
    remote = f'encoder: {{kind: openai, base_url: "{url}", model: m}}'
    encoder = one_error(replace_line(VALID, 2, remote))
    assert_points_at(encoder, 2, "encoder.base_url", *words)


@pytest.mark.parametrize(
    ("more", "field"),
    [
        ("api_key_env: EMBED_KEY", "encoder.api_key_env"),
        ("headers_env: {Authorization: EMBED_AUTH}", "encoder.headers_env.Authorization"),
    ],
)
def test_an_encoder_with_a_key_and_a_base_url_s_credentials_is_refused(
    more: str, field: str
) -> None:
    """httpx sends a base URL's ``user:password@`` (as Basic) in place of the key's
    header: the key went unused without a word."""
    url = "https://svc:pw-9911@e.example/v1"
    encoder = f'encoder: {{kind: openai, base_url: "{url}", model: m, {more}}}'
    error = one_error(replace_line(VALID, 2, encoder))
    assert_points_at(error, 2, field, "user:password@", "one Authorization")
    assert "pw-9911" not in str(error)
    alone = f'encoder: {{kind: openai, base_url: "{url}", model: m}}'
    parse_registry(replace_line(VALID, 2, alone))
    without = f"encoder: {{kind: openai, base_url: https://e.example/v1, model: m, {more}}}"
    parse_registry(replace_line(VALID, 2, without))


@pytest.mark.parametrize(
    ("more", "field"),
    [
        ("kind: openai, api_key_env: LOCAL_KEY", "api_key_env"),
        ("kind: openai, headers_env: {Authorization: LOCAL_AUTH}", "headers_env.Authorization"),
        ("kind: anthropic, headers_env: {authorization: LOCAL_AUTH}", "headers_env.authorization"),
        ("kind: bedrock, region: us-east-1, api_key_env: LOCAL_KEY", "api_key_env"),
        ("kind: vertex, api_key_env: LOCAL_KEY", "api_key_env"),
        ("kind: vertex", "base_url"),
        ("kind: openai, auth: google", "auth"),
    ],
)
def test_a_provider_with_a_key_and_a_base_url_s_credentials_is_refused(
    more: str, field: str
) -> None:
    """A provider sends its key (or Google's token) as ``Authorization``, and its
    transport turns a base URL's ``user:password@`` into Basic only where none is set:
    the URL's credentials were dropped without a word. Named where the file says it,
    the password never repeated."""
    url = "https://svc:pw-9911@p.example/v1"
    if "vertex" in more:
        url = "https://svc:pw-9911@p.example/v1/projects/p-1/locations/us-east5"
    error = one_error(replace_line(VALID, 4, f'local: {{base_url: "{url}", {more}}}'))
    assert_points_at(error, 4, f"providers.local.{field}", "user:password@")
    assert "pw-9911" not in str(error) and "svc" not in str(error)
    plain = url.replace("svc:pw-9911@", "")
    parse_registry(replace_line(VALID, 4, f'local: {{base_url: "{plain}", {more}}}'))


@pytest.mark.parametrize(
    "more",
    [
        "kind: openai",
        "kind: anthropic, api_key_env: LOCAL_KEY",
        "kind: openai, headers_env: {X-Proxy: P}",
    ],
)
def test_a_base_url_s_credentials_alone_or_beside_an_x_api_key_are_served(more: str) -> None:
    """The URL's credentials alone are sent (as Basic); an anthropic key travels in
    ``x-api-key``, so both are sent (a Basic-auth proxy in front of Anthropic)."""
    url = "https://svc:pw-9911@p.example/v1"
    parse_registry(replace_line(VALID, 4, f'local: {{base_url: "{url}", {more}}}'))


def test_api_key_env_must_be_a_variable_name() -> None:
    text = replace_line(VALID, 5, "openai: {kind: openai, api_key_env: sk-abc123-secret}")
    error = one_error(text)
    assert_points_at(error, 5, "providers.openai.api_key_env", "NAME of an environment variable")
    assert "sk-abc123" not in str(error)


@pytest.mark.parametrize(
    "written", ["'${OPENAI_API_KEY}'", "$OPENAI_API_KEY", "os.environ/OPENAI_API_KEY"]
)
def test_a_variable_written_as_a_reference_is_told_its_name(written: str) -> None:
    """A shell, Compose or LiteLLM habit: it was told not to write the key itself."""
    text = replace_line(VALID, 5, f"openai: {{kind: openai, api_key_env: {written}}}")
    error = one_error(text)
    assert_points_at(error, 5, "providers.openai.api_key_env", "name alone, 'OPENAI_API_KEY'")


def test_all_errors_are_reported_in_one_pass_sorted_by_line() -> None:
    text = VALID
    for line, new in [(23, "threshold: 7"), (9, "provider: nowhere"), (16, "kk: 3")]:
        text = replace_line(text, line, new)
    text += "default: {target: small}\n"
    with pytest.raises(ConfigErrors) as info:
        parse_registry(text, source="reg.yaml")
    errors = info.value.errors
    # The unknown provider is a cross-field check: it waits until the fields are valid.
    assert [(e.line, e.field) for e in errors] == [
        (16, "intent.kk"),
        (23, "routes[0].threshold"),
        (36, "default"),
    ]
    lines = str(info.value).splitlines()
    assert lines == [str(e) for e in errors]
    assert isinstance(info.value, ConfigError) and info.value.line == 16


def test_cross_field_errors_are_all_reported() -> None:
    text = replace_line(replace_line(VALID, 9, "provider: nowhere"), 22, "target: nothing")
    errors = errors_of(text)
    assert [(e.line, e.field) for e in errors] == [
        (9, "models.large.provider"),
        (22, "routes[0].target"),
    ]


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    assert info.value.file == str(path)
    assert str(info.value).startswith(f"{path}: cannot read the registry")


def test_directory_is_not_a_registry(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the registry"):
        load_registry(tmp_path)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(VALID.encode() + "# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    assert (info.value.line, info.value.message) == (36, "the file is not valid UTF-8")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_a_utf16_or_utf32_file_is_refused_at_its_first_line(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "registry.yaml"
    path.write_bytes(VALID.encode(encoding))
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    assert info.value.line == 1 and "save it as UTF-8" in info.value.message


def test_a_long_value_is_not_echoed_whole() -> None:
    """A megabyte in base_url (or a route's name) was repeated whole in its error."""
    url = replace_line(VALID, 4, "local: {kind: openai, base_url: " + "x" * 1_000_000 + "}")
    name = replace_line(VALID, 19, "- name: _" + "n" * 1_000_000)
    for text, field in [(url, "providers.local.base_url"), (name, "routes[0].name")]:
        errors = errors_of(text)
        assert field in [e.field for e in errors]
        assert all(len(str(e)) < 1_100 for e in errors), str(errors)[:200]


def test_a_long_key_is_not_echoed_whole() -> None:
    """A key past YAML's 1,024 characters (written ``? key``) was repeated whole in the
    field of each of its errors: 100 of them, 100 times the key."""
    key = "k" * 100_000
    lines = VALID.splitlines()
    lines[6:6] = [f"  ? {key}", "  : {provider: local, model: m, bogus: 1, other: 2}"]
    errors = errors_of("\n".join(lines) + "\n")
    assert any((e.field or "").startswith("models.kkk") for e in errors), errors
    assert all(len(str(e)) < 2_100 for e in errors), str(errors)[:200]


def test_a_name_the_schema_allows_is_named_whole_in_an_error() -> None:
    """Names may be 256 characters (`MAX_NAME_CHARS`), but an error's field cut a key at
    80 and a message cut a name at 60: a 200-character model or alias could not be
    found from its error. A name up to the limit is named whole, in the field and in
    the message, quoted or bare."""
    model = "m" * MAX_NAME_CHARS
    bogus = errors_of(replace_line(VALID, 7, f"{model}: {{provider: local, model: m, bogus: 1}}"))
    assert f"models.{model}.bogus" in [e.field for e in bogus], bogus
    alias = "my alias " + "a" * 191  # 200 characters; a space: quoted in the field
    error = one_error(VALID + f"aliases: {{'{alias}': nothing}}\n")
    assert error.field == f"aliases[{alias!r}]", error
    control = "b" * 199 + "\t"
    error = one_error(VALID + f'aliases: {{"{control[:-1]}\\t": small}}\n')
    assert repr(control) in error.message and "…" not in str(error), error
    route = "r" * 200
    error = one_error(replace_line(VALID, 28, f"default: {route}"))
    assert f"write default: {{target: {route}}}" in error.message, error


def test_a_key_past_the_name_limit_is_cut_in_the_field() -> None:
    """Past `MAX_NAME_CHARS` a key is no name the registry allows: its first 256
    characters are shown, then '…' (a 100 kB key is not repeated in each error)."""
    key = "k" * 100_000
    lines = VALID.splitlines()
    lines[6:6] = [f"  ? {key}", "  : {provider: local, model: m}"]
    errors = errors_of("\n".join(lines) + "\n")
    assert f"models.{'k' * MAX_NAME_CHARS}…" in [e.field for e in errors], errors
    quoted = errors_of(VALID + f"aliases: {{? 'a {key}' : small}}\n")
    assert [e.field for e in quoted] == [f"aliases[{('a ' + key)[:MAX_NAME_CHARS]!r}…]"], quoted
    assert all(len(str(e)) < 1_000 for e in errors + quoted), str(errors)[:200]


def test_a_key_yaml_reads_as_a_date_is_named_as_written() -> None:
    """``2001-12-14:`` is a plain scalar YAML reads as a date: "mapping keys must be
    plain scalars" said otherwise, at the mapping, and named no field at the top level."""
    error = errors_of(replace_line(VALID, 7, "2026-01-01: {provider: local, model: m}"))[0]
    assert_points_at(error, 7, "models.2026-01-01", "a date", "quote it")
    top = one_error("2026-01-01: 1\n" + VALID)
    assert_points_at(top, 1, "2026-01-01", "a date", "quote it")


def test_errors_from_a_file_name_the_path(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(replace_line(VALID, 22, "target: nothing"))
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    assert str(info.value).startswith(f"{path}:22: routes[0].target: unknown model 'nothing'")


def test_alias_bombs_are_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    error = one_error("\n".join(lines) + "\n")
    assert "aliases" in error.message and error.line is not None


def test_aliases_that_multiply_errors_are_one_error_at_the_alias() -> None:
    """400 routes, each an alias of one with 400 examples of the wrong type: a 5 kB
    file whose validation made 160,000 errors (a 14 MB message; 980,100 and 1.6 GB of
    memory at 990). Aliases may add 100,000 values to what the file writes."""
    route = "  - &r {name: a, target: large, examples: [" + ", ".join(["1"] * 400) + "]}\n"
    aliased = VALID[: VALID.index("routes:")] + "routes:\n" + route + "  - *r\n" * 399
    error = one_error(aliased)
    assert error.field is not None and error.field.startswith("routes[")
    assert error.line == aliased.count("\n", 0, aliased.index("routes:")) + 1
    assert "aliases expand" in error.message and "100000" in error.message.replace(",", "")


def test_past_100_errors_the_rest_are_counted_not_listed() -> None:
    """100,000 examples of the wrong type written out were 100,000 lines (8 MB) on the
    terminal, and one log line of a reload."""
    text = replace_line(VALID, 21, "examples: [" + ", ".join(["1"] * 150) + "]")
    with pytest.raises(ConfigErrors) as info:
        parse_registry(text, source="reg.yaml")
    assert len(info.value.errors) == 150
    lines = str(info.value).splitlines()
    assert len(lines) == 101 and lines[-1] == "reg.yaml: 50 more errors not shown"
    assert lines[:100] == [str(error) for error in info.value.errors[:100]]


def test_one_error_past_100_is_one_more_error() -> None:
    text = replace_line(VALID, 21, "examples: [" + ", ".join(["1"] * 101) + "]")
    with pytest.raises(ConfigErrors) as info:
        parse_registry(text, source="reg.yaml")
    assert str(info.value).splitlines()[-1] == "reg.yaml: 1 more error not shown"


def test_a_recursive_alias_names_its_line() -> None:
    error = one_error(VALID + "extra: &r [1, *r]\n")
    assert error.line == VALID.count("\n") + 1 and "recursive alias" in error.message


def test_python_tags_are_refused() -> None:
    error = one_error("version: !!python/object/apply:os.system ['true']\n")
    assert (error.line, error.field) == (1, "version")
    assert error.message.startswith("the tag !!python/object/apply:os.system is not allowed")


def test_text_completions_need_an_openai_compatible_provider() -> None:
    text = replace_line(VALID, 12, "text_completions: true")
    assert parse_registry(text).registry.models["large"].text_completions is True
    anthropic = replace_line(text, 5, "openai: {kind: anthropic, api_key_env: ANTHROPIC_API_KEY}")
    error = one_error(anthropic)
    assert_points_at(
        error, 12, "models.large.text_completions", "every provider serving this model"
    )
    embedding = replace_line(text, 11, "kind: embedding")
    (error,) = [e for e in errors_of(embedding) if e.field == "models.large.text_completions"]
    assert_points_at(error, 12, "models.large.text_completions", "an embedding model completes")
    error = one_error(replace_line(VALID, 12, "text_completions: sometimes"))
    assert error.field == "models.large.text_completions" and error.line == 12, str(error)


@pytest.mark.parametrize(
    ("new", "words"),
    [
        ("fim_template: '<PRE>{prefix}<SUF>'", "must hold {prefix} and {suffix} once each"),
        ("fim_template: '{prefix}{suffix}{middle}'", "no other field"),
        ("fim_template: '{prefix}{suffix}{'", "not a template"),
        ("fim_template: '{prefix!r}{suffix}'", "no other field"),
        ("fim_template: '{prefix:>5}{suffix}'", "no other field"),
        ("fim_template: '{prefix}{suffix}{prefix}'", "once each"),
    ],
)
def test_a_fim_template_is_checked(new: str, words: str) -> None:
    text = replace_line(VALID, 12, f"text_completions: true\n    {new}")
    error = one_error(text)
    assert error.field == "models.large.fim_template" and error.line == 13, str(error)
    assert words in error.message


def test_a_fim_template_needs_text_completions() -> None:
    text = replace_line(VALID, 12, "fim_template: '<PRE>{prefix}<SUF>{suffix}<MID>'")
    error = one_error(text)
    assert_points_at(error, 12, "models.large.fim_template", "text_completions: true")
    good = replace_line(
        VALID, 12, "text_completions: true\n    fim_template: '{{x}}{prefix}{suffix}'"
    )
    assert parse_registry(good).registry.models["large"].fim_template == "{{x}}{prefix}{suffix}"


@pytest.mark.parametrize(
    ("written", "said"),
    [("true", "the boolean true"), ("yes", "the boolean true"), ("'0.3'", "the string '0.3'")],
)
def test_a_number_written_as_a_boolean_or_a_string_is_refused(written: str, said: str) -> None:
    """`threshold: true` loaded as 1.0 and `strong_share: '0.3'` as 0.3: typos that load
    and change routing."""
    text = replace_line(VALID, 23, f"threshold: {written}")
    with pytest.raises(ConfigError) as caught:
        parse_registry(text, source="reg.yaml")
    assert str(caught.value) == f"reg.yaml:23: routes[0].threshold: must be a number, not {said}"


@pytest.mark.parametrize("written", ["1e-3", "5E-1", "-2e+0"])
def test_an_exponent_without_a_point_is_still_a_number(written: str) -> None:
    """PyYAML reads `1e-3` as a string (YAML 1.1 wants a point); it loaded before the
    check that refuses numbers written as strings, and must still."""
    text = replace_line(VALID, 23, f"threshold: {written}")
    if float(written) < 0:
        with pytest.raises(ConfigError, match="between 0 and 1"):
            parse_registry(text, source="reg.yaml")
        return
    route = parse_registry(text, source="reg.yaml").registry.routes[0]
    assert route.threshold == float(written)


def test_a_bad_reasoning_mapping_is_one_error_not_also_false() -> None:
    """``reasoning`` is a mapping or ``false``: pydantic's second branch ("Input should be
    False") is noise beside what is wrong in the mapping."""
    error = one_error(replace_line(VALID, 13, "reasoning: {effort: ultra}"))
    assert_points_at(error, 13, "models.large.reasoning.effort", "'minimal'")


def test_a_file_of_routing_cases_is_said_as_such() -> None:
    """`registry check cases.yaml` listed five missing or unknown keys; a cases file where
    a registry goes is one error pointing at `registry test`."""
    error = one_error("# cases\ncases:\n  - {name: a, prompt: hi, expect: {route: x}}\n")
    assert (error.line, error.field) == (2, "cases")
    assert "routing cases, not a registry" in error.message
    assert "llmroute registry test reg.yaml" in error.message
    # a registry that also has a `cases` key is validated as a registry (unknown key)
    unknown = errors_of(VALID + "cases: []\n", "reg.yaml")
    assert any("unknown key 'cases'" in str(e) for e in unknown)


def test_a_key_yaml_reads_as_a_boolean_is_named_as_such() -> None:
    """``off:`` is the boolean false in YAML 1.1, so ``reasoning: {off: true}`` (the docs
    warn: the key is ``turn_off``) was "models.large.reasoning[0]: Keys should be
    strings"; it is said at the mapping, with the keys it takes."""
    error = one_error(replace_line(VALID, 13, "reasoning: {off: true}"))
    assert_points_at(error, 13, "models.large.reasoning", "boolean false")
    assert "(did you mean 'turn_off'?)" in error.message and "allowed keys:" in error.message
    other = one_error(VALID + "telemetry: {on: true}\n")
    assert other.field == "telemetry" and "boolean true" in other.message
    assert "turn_off" not in other.message


@pytest.mark.parametrize(
    ("gate", "field", "said"),
    [
        (
            "{kind: self_consistency, threshold: 0.8}",
            "threshold",
            "'threshold' is not used by a self_consistency gate; its keys: samples, agreement",
        ),
        ("{kind: heuristic, model: large}", "model", "not used by a heuristic gate"),
        ("{kind: verifier, model: large, samples: 5}", "samples", "not used by a verifier gate"),
        ("{kind: learned, min_chars: 10}", "min_chars", "not used by a learned gate"),
    ],
)
def test_a_gate_key_of_another_kind_is_refused_not_ignored(
    gate: str, field: str, said: str
) -> None:
    """`{kind: self_consistency, threshold: 0.8}` loaded and gated at the default
    agreement: the key was read by no gate, as a typo would be."""
    text = VALID.replace(
        "    target: small\n    threshold: 0.55\n",
        f"    target: small\n    threshold: 0.55\n"
        f"    cascade: {{tiers: [small, large], gates: [heuristic, {gate}]}}\n",
    )
    error = one_error(text)
    assert error.field == f"routes[0].cascade.gates[1].{field}"
    assert said in error.message and error.line == 24


def test_each_gate_takes_its_own_keys() -> None:
    gates = (
        "[{kind: heuristic, refusal: false, truncated: false, json_format: false, min_chars: 2,"
        " max_chars: 90}, {kind: learned, artifact: builtin, threshold: 0.4},"
        " {kind: self_consistency, samples: 4, agreement: 0.7},"
        " {kind: verifier, model: large, threshold: 0.6}]"
    )
    text = VALID.replace(
        "    target: small\n    threshold: 0.55\n",
        f"    target: small\n    threshold: 0.55\n"
        f"    cascade: {{tiers: [small, large], gates: {gates}}}\n",
    )
    route = parse_registry(text).registry.route("code")
    assert route.cascade is not None and len(route.cascade.gates) == 4


def _with_cascade(cascade: str) -> str:
    return VALID.replace(
        "    target: small\n    threshold: 0.55\n",
        f"    target: small\n    threshold: 0.55\n    cascade: {cascade}\n",
    )


def test_a_heuristic_gate_whose_length_bounds_cross_is_refused() -> None:
    """`min_chars: 50, max_chars: 10` loaded, and every answer escalated (too short or
    too long): no length passes both."""
    error = one_error(
        _with_cascade(
            "{tiers: [small, large], gates: [{kind: heuristic, min_chars: 50, max_chars: 10}]}"
        )
    )
    assert_points_at(error, 24, "routes[0].cascade.gates[0].max_chars", "below min_chars 50")
    equal = "{tiers: [small, large], gates: [{kind: heuristic, min_chars: 10, max_chars: 10}]}"
    route = parse_registry(_with_cascade(equal)).registry.route("code")
    assert route.cascade is not None and route.cascade.gates[0].max_chars == 10


def test_gates_on_the_last_tier_are_refused_not_ignored() -> None:
    """The last tier is served ungated (nothing to escalate to), so its `gates:` loaded
    and never ran."""
    error = one_error(_with_cascade("{tiers: [small, {model: large, gates: [heuristic]}]}"))
    assert_points_at(error, 24, "routes[0].cascade.tiers[1].gates", "the last tier", "remove")
    shorthand = one_error(_with_cascade("[small, {model: large, gates: [learned]}]"))
    assert shorthand.field == "routes[0].cascade.tiers[1].gates" and shorthand.line == 24
    earlier = "{tiers: [{model: small, gates: [heuristic]}, {model: large, gates: []}]}"
    route = parse_registry(_with_cascade(earlier)).registry.route("code")
    assert route.cascade is not None and route.cascade.tiers[0].gates is not None


def test_a_route_action_beside_pii_types_is_one_error_naming_no_class() -> None:
    """`pii: {route: guarded, EMAIL: block}` was three errors, one of them at the field
    `...pii.RouteTo.EMAIL`: the name of a Python class, not of anything in the file."""
    safety = (
        "safety:\n  injection: {enabled: false}\n"
        "  profiles: {standard: {pii: {route: large, EMAIL: block}}}\n"
    )
    error = one_error(VALID + safety)
    assert error.field == "safety.profiles.standard.pii" and error.line == 38
    assert error.message.startswith("{route: MODEL} stands alone; per PII type")
    injection = "safety:\n  profiles: {standard: {injection: {route: large, EMAIL: block}}}\n"
    error = one_error(VALID + injection)
    assert error.field == "safety.profiles.standard.injection.EMAIL"
    assert error.message == "unknown key 'EMAIL'"


def test_extra_threshold_with_no_extra_window_is_refused() -> None:
    """`extra_threshold` with `extra_windows: 0` loaded and was never used: the operator
    thought it applied."""
    injection = "{artifact: mine, extra_windows: 0, extra_threshold: 0.5}"
    error = one_error(VALID + f"safety:\n  injection: {injection}\n")
    assert (error.line, error.field) == (37, "safety.injection.extra_threshold")
    assert error.message.startswith("extra_windows is 0, so no window is scored at it")
    parse_registry(VALID + "safety:\n  injection: {artifact: mine, extra_windows: 0}\n")


def test_injection_settings_kept_while_the_detector_is_off_load_and_are_warned_of() -> None:
    """Turning the detector off for a while keeps its settings: they load (the static
    detector's `extra_threshold` refusal, which named the detector, included), and
    ``registry check`` says that none applies."""
    block = (
        "safety:\n  injection:\n    enabled: false\n    max_windows: 4\n    extra_threshold: 0.5\n"
    )
    registry = parse_registry(VALID + block).registry  # VALID's encoder: builtin:static
    warnings = [w for w in lint(registry) if w.startswith("safety.injection.")]
    assert warnings == [
        f"safety.injection.{key}: set, but safety.injection.enabled is false: it does "
        "nothing until the detector is turned on"
        for key in ("extra_threshold", "max_windows")
    ]
    on = parse_registry(VALID + "safety:\n  injection: {max_windows: 4}\n").registry
    assert not [w for w in lint(on) if w.startswith("safety.injection.")]


def test_profile_actions_written_while_their_detector_is_off_are_warned_of() -> None:
    """A profile's `injection`, `unscanned` and `unread_scripts` never apply while the
    injection scan is off, nor its `pii` while the PII detector is: one warning per key
    written; a profile left to its defaults gives none."""
    profile = "injection: allow\n      unscanned: allow\n      unread_scripts: block\n"
    block = (
        "safety:\n  injection: {enabled: false}\n  pii: {enabled: false}\n"
        f"  profiles:\n    standard:\n      {profile}      pii: block\n"
        "    open: {restore: true}\n"
    )
    registry = parse_registry(VALID + block).registry
    warnings = [w for w in lint(registry) if w.startswith("safety.profiles.")]
    assert warnings == [
        f"safety.profiles.{name}.{key}: set, but safety.{detector}.enabled is false: it "
        "never applies until the detector is turned on"
        for name, key, detector in [
            ("open", "restore", "pii"),  # nothing is redacted, so nothing restored
            ("standard", "injection", "injection"),
            ("standard", "pii", "pii"),
            ("standard", "unread_scripts", "injection"),
            ("standard", "unscanned", "injection"),
        ]
    ]
    kept = block.replace("{restore: true}", "{restore: false}")  # the default, written
    assert not [w for w in lint(parse_registry(VALID + kept).registry) if ".open." in w]
    defaults = "safety:\n  injection: {enabled: false}\n  pii: {enabled: false}\n"
    assert not [w for w in lint(parse_registry(VALID + defaults).registry) if "profiles" in w]
    on = f"safety:\n  profiles:\n    standard:\n      {profile}      pii: block\n"
    assert not [w for w in lint(parse_registry(VALID + on).registry) if "profiles" in w]


@pytest.mark.parametrize(
    ("pii", "said"),
    [
        ("allow", "pii: allow"),
        ("block", "pii: block"),
        ("{route: large}", "pii: {route: large}"),
        ("{EMAIL: block, PHONE: allow}", "pii: {EMAIL: block, PHONE: allow}"),
        ("{EMAIL: block, '*': allow}", 'pii: {EMAIL: block, "*": allow}'),
    ],
)
def test_restore_in_a_profile_that_redacts_nothing_is_warned_of(pii: str, said: str) -> None:
    """`restore: true` swaps the placeholders the request's redaction issued back into
    the answer: a profile that redacts no PII type issues none, so it restores nothing.
    A profile that redacts some type (the default `pii: redact`, or one type of a
    mapping) gives no warning, and the warning is at the line of `restore`."""
    block = f"safety:\n  profiles:\n    standard:\n      pii: {pii}\n      restore: true\n"
    loaded = parse_registry(VALID + block)
    warnings = [w for w in lint(loaded.registry) if w.startswith("safety.profiles.")]
    assert warnings == [
        f"safety.profiles.standard.restore: true, but the profile redacts no PII type "
        f"({said}), so its requests carry no placeholder to restore; redact a type, or "
        "remove restore"
    ]
    assert loaded.at(ConfigError("", field="safety.profiles.standard.restore")).line == 40
    for redacts in ("redact", "{EMAIL: redact}", "{EMAIL: block, '*': redact}"):
        text = VALID + block.replace(f"pii: {pii}", f"pii: {redacts}")
        assert not [w for w in lint(parse_registry(text).registry) if "profiles" in w]
    default = "safety:\n  profiles: {standard: {restore: true}}\n"
    assert not [w for w in lint(parse_registry(VALID + default).registry) if "profiles" in w]


def test_pii_settings_kept_while_the_detector_is_off_are_warned_of() -> None:
    """As the injection keys: `entities`, `phone_regions`, `ner_model` and `scan` do
    nothing while `pii.enabled` is false, one warning each at its line. Not
    `pseudonym_key_env`: `llmroute db forget --end-user` needs the key of the pseudonyms
    logged while the detector was on."""
    block = (
        "safety:\n  pii:\n    enabled: false\n    entities: [EMAIL, PERSON]\n"
        "    phone_regions: [US]\n    ner_model: en_core_web_sm\n    scan: [user]\n"
        "    pseudonym_key_env: PSEUDONYM_KEY\n"
    )
    loaded = parse_registry(VALID + block)
    warnings = [w for w in lint(loaded.registry) if w.startswith("safety.pii.")]
    assert warnings == [
        f"safety.pii.{key}: set, but safety.pii.enabled is false: it does nothing until "
        "the detector is turned on"
        for key in ("entities", "ner_model", "phone_regions", "scan")
    ]
    lines = [loaded.at(ConfigError("", field=w.partition(":")[0])).line for w in warnings]
    assert lines == [39, 41, 40, 42]
    on = parse_registry(VALID + block.replace("enabled: false", "enabled: true")).registry
    assert not [w for w in lint(on) if w.startswith("safety.pii.")]


@pytest.mark.parametrize(
    ("injection", "field", "line"),
    [
        ("{window_chars: 600, stride_chars: 600}", "stride_chars", 37),
        ("\n    window_chars: 750\n", "window_chars", 38),  # the default stride: 750
    ],
)
def test_windows_that_do_not_overlap_are_warned_of(injection: str, field: str, line: int) -> None:
    """`stride_chars` equal to `window_chars` loads (it leaves no gap), but the windows
    only touch: an instruction cut at an edge is read whole by neither. The warning names
    the key written; a stride one below the window overlaps, and is not warned of."""
    loaded = parse_registry(VALID + f"safety:\n  injection: {injection}\n")
    warnings = [w for w in lint(loaded.registry) if w.startswith("safety.injection.")]
    size = loaded.registry.safety.injection.window_chars  # type: ignore[union-attr]
    assert warnings == [
        f"safety.injection.{field}: stride_chars equals window_chars ({size}), so the "
        "windows do not overlap: an instruction cut at a window's edge is read whole by "
        "neither; make the stride smaller than the window (the defaults, 750 and 1000, "
        "overlap by 250 characters)"
    ]
    assert loaded.at(ConfigError("", field=warnings[0].partition(":")[0])).line == line
    overlapping = "{window_chars: 600, stride_chars: 599}"
    loaded = parse_registry(VALID + f"safety:\n  injection: {overlapping}\n")
    assert not [w for w in lint(loaded.registry) if w.startswith("safety.injection.")]


def test_a_window_longer_than_the_encoder_reads_is_warned_of() -> None:
    """A built-in encoder reads the first `max_tokens` of a window (~4.7 characters a
    token of English; at most 6 are counted): past that, a window only reaches the
    detector's word features. `max_windows: 1` with a huge window looked like a whole
    document scanned in one window, and was mostly its first 1,500 characters; nothing
    said so (text past the windows is at least called unscanned)."""
    injection = "{window_chars: 20000, stride_chars: 15000, max_windows: 1}"
    loaded = parse_registry(VALID + f"safety:\n  injection: {injection}\n")
    warnings = [w for w in lint(loaded.registry) if w.startswith("safety.injection.")]
    assert warnings == [
        "safety.injection.window_chars: 20000 characters, but the encoder (builtin:static, "
        "max_tokens 256, truncate head) reads at most about 1536 of a window (6 characters "
        "a token): the rest reaches only the detector's n-gram features, so an instruction "
        "there is likely missed; use windows of at most 1536 characters (and more of them: "
        "max_windows), or raise encoder.max_tokens"
    ]
    assert loaded.at(ConfigError("", field="safety.injection.window_chars")).line == 37
    fits = "{window_chars: 1536, stride_chars: 1000}"
    loaded = parse_registry(VALID + f"safety:\n  injection: {fits}\n")
    assert not [w for w in lint(loaded.registry) if w.startswith("safety.injection.")]
    short = VALID.replace(
        "encoder: builtin:static", "encoder: {kind: builtin, name: static, max_tokens: 128}"
    )
    loaded = parse_registry(short + "safety:\n  injection: {artifact: mine}\n")
    warnings = [w for w in lint(loaded.registry) if w.startswith("safety.injection.")]
    assert len(warnings) == 1 and warnings[0].startswith(
        "safety.injection.window_chars: 1000 characters, but the encoder (builtin:static, "
        "max_tokens 128, truncate head) reads at most about 768 of a window"
    )


def test_a_window_longer_than_the_extra_windows_static_encoder_reads_is_warned_of() -> None:
    """The windows past `max_windows` are read by the built-in static encoder at its
    default 256 tokens, whatever the registry's encoder reads: MiniLM at 512 tokens reads
    a 3,000-character window, the extra windows' detector half of it. None is said with
    `extra_windows: 0`, nor when the registry's detector is the static one (its extra
    windows are its own, read as its encoder reads them)."""
    minilm = "encoder: {kind: builtin, name: minilm, max_tokens: 512}"
    text = VALID.replace("encoder: builtin:static", minilm)
    injection = "safety:\n  injection: {artifact: mine, window_chars: 3000, stride_chars: 2000%s}\n"
    loaded = parse_registry(text + injection % "")
    warnings = [w for w in lint(loaded.registry) if w.startswith("safety.injection.")]
    assert warnings == [
        "safety.injection.window_chars: 3000 characters, but the built-in static detector "
        "that scores the extra_windows (max_tokens 256) reads at most about 1536 of a window "
        "(6 characters a token): the rest of those windows reaches only its n-gram features, "
        "so an instruction there is likely missed; use windows of at most 1536 characters "
        "(and more of them)"
    ]
    static = text.replace("name: minilm", "name: static") + injection.replace("mine", "builtin")
    for quiet in (text + injection % ", extra_windows: 0", static % ""):
        registry = parse_registry(quiet).registry
        assert not [w for w in lint(registry) if w.startswith("safety.injection.")]


@pytest.mark.parametrize(
    ("profile", "line", "field"),
    [
        ("pii:\n        EMAIL:\n          rout: large\n", 42, "pii.EMAIL.rout"),
        ("unread_scripts:\n        rout: large\n", 41, "unread_scripts.rout"),
        ("injection:\n        rout: large\n", 41, "injection.rout"),
    ],
)
def test_an_actions_misspelt_route_is_one_error_at_its_key(
    profile: str, line: int, field: str
) -> None:
    """`{EMAIL: {rout: large}}` was four errors (both branches of `Action | dict[str,
    Action]` reported, `pii.route` missing and `pii.EMAIL` unknown among them), an
    action's `{rout: large}` two: one now, at the key written."""
    safety = (
        f"safety:\n  injection: {{enabled: false}}\n  profiles:\n    standard:\n      {profile}"
    )
    error = one_error(VALID + safety)
    assert (error.line, error.field) == (line, f"safety.profiles.standard.{field}")
    assert error.message.startswith("unknown key 'rout' (did you mean 'route'?); an action is")


def test_a_pii_types_route_with_a_stray_key_or_none_is_one_error() -> None:
    """Each was three errors, `pii.route` missing and `pii.EMAIL` unknown among them."""
    safety = "safety:\n  injection: {enabled: false}\n  profiles: "
    error = one_error(VALID + safety + "{s: {pii: {EMAIL: {route: large, x: 1}}}}\n")
    assert (error.field, error.message) == ("safety.profiles.s.pii.EMAIL.x", "unknown key 'x'")
    error = one_error(VALID + safety + "{s: {pii: {EMAIL: {}}}}\n")
    assert (error.field, error.line) == ("safety.profiles.s.pii.EMAIL.route", 38)
    assert error.message == "missing required key 'route'"


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("'yes'", "the string 'yes'"),
        ('"false"', "the string 'false'"),
        ("1", "the number 1"),
        ("0.0", "the number 0.0"),
    ],
)
def test_a_boolean_written_as_a_string_or_a_number_is_refused(written: str, said: str) -> None:
    """`enabled: "no"` loaded as false and `vision: 1` as true: pydantic's lax mode
    guessed what a quoted boolean meant."""
    text = replace_line(VALID, 12, f"vision: {written}")
    with pytest.raises(ConfigError) as caught:
        parse_registry(text, source="reg.yaml")
    said = f"reg.yaml:12: models.large.vision: must be true or false, not {said}"
    assert str(caught.value) == said


@pytest.mark.parametrize("written", ["true", "yes", "off", "null"])
def test_a_boolean_written_bare_loads(written: str) -> None:
    text = replace_line(VALID, 12, f"vision: {written}")
    vision = parse_registry(text).registry.models["large"].vision
    assert vision is {"true": True, "yes": True, "off": False, "null": None}[written]


@pytest.mark.parametrize(
    ("written", "said"), [("'false'", "the string 'false'"), ("0", "the number 0")]
)
def test_a_reasoning_written_as_a_string_or_a_number_is_one_error(written: str, said: str) -> None:
    """`reasoning: 0` loaded as false; a quoted 'false' gave two lines (a mapping, and
    pydantic's "Input should be False")."""
    text = replace_line(VALID, 13, f"reasoning: {written}")
    error = one_error(text)
    assert_points_at(error, 13, "models.large.reasoning")
    assert error.message == f"must be true, false or a mapping, not {said}"


def test_a_cache_entry_bound_past_64_mib_is_refused_where_it_is_written() -> None:
    """`max_entry_bytes: 10 GB` loaded: one answer could have taken a worker's memory."""
    error = one_error(VALID + "cache:\n  max_entry_bytes: 10_000_000_000\n")
    assert_points_at(error, 37, "cache.max_entry_bytes", "less than or equal to 67108864")
    bound = parse_registry(VALID + "cache: {max_entry_bytes: 67108864}\n").registry.cache
    assert bound is not None and bound.max_entry_bytes == 64 * 1024 * 1024


def test_an_error_found_building_what_the_registry_names_is_cut_as_a_load_error_is() -> None:
    """A router's error at a field echoes its value (a megabyte `reasoning.scorer` made a
    1 MB line: "…/xxx…: cannot read the reasoning scorer: File name too long"); at the
    registry's file and line it is cut to 1,000 characters, as a load error is, in its
    middle: the reason after the value is kept."""
    loaded = parse_registry(VALID, source="reg.yaml")
    long = ConfigError("/r/" + "x" * 1_000_000 + ": no such thing", field="intent.k")
    error = loaded.at(long)
    assert (error.file, error.line, error.field) == ("reg.yaml", 16, "intent.k"), error
    assert len(error.message) == 1_000, len(error.message)
    assert error.message.startswith("/r/xxx") and error.message.endswith("x: no such thing")
    assert "…" in error.message
    short = loaded.at(ConfigError("/r/x: no such thing", field="intent.k"))
    assert short.message == "/r/x: no such thing"
