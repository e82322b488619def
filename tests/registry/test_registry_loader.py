"""Loading a valid registry, its version id, and writing it back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from registry_helpers import VALID, replace_line

import llmroute.registry as registry_pkg
from llmroute.registry import (
    BuiltinEncoderSpec,
    LoadedRegistry,
    OpenAIEncoderSpec,
    Registry,
    dump_registry,
    load_registry,
    parse_registry,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "registry.yaml"


def test_full_registry_loads_into_typed_models(tmp_path: Path) -> None:
    path = tmp_path / "reg.yaml"
    path.write_text(VALID)
    loaded = load_registry(path)
    assert isinstance(loaded, LoadedRegistry)
    assert (loaded.source, loaded.base_dir) == (str(path), tmp_path.resolve())
    assert len(loaded.version) == 12 and int(loaded.version, 16) >= 0
    reg = loaded.registry
    assert reg.version == 3
    assert reg.encoder == BuiltinEncoderSpec(name="static")
    assert reg.providers["local"].api_key_env is None
    assert reg.providers["openai"].api_key_env == "OPENAI_API_KEY"
    assert reg.model("large").price.output == 8.0
    assert reg.model("large").reasoning is not None
    assert reg.model("small").context_window is None
    assert (reg.intent.method, reg.intent.k, reg.intent.threshold) == ("knn", 3, 0.4)
    assert reg.intent.window == 1 and reg.intent.out_of_scope == []
    assert isinstance(reg.routes, tuple)
    code = reg.route("code")
    assert code.examples == ("write a Python function to parse JSON", "debug this SQL query")
    assert (code.threshold, code.policy.timeout_s, code.policy.fallback) == (0.55, 30.0, ("large",))
    assert code.policy.retries == 1
    assert reg.threshold(reg.route("chitchat")) == 0.4 and reg.threshold(code) == 0.55
    assert reg.default.target == "small"
    tenant, traces = reg.rules
    assert tenant.when.header == {"x-tenant": "acme"}  # header names are case-insensitive
    assert (tenant.target, tenant.route) == ("large", None)
    assert traces.when.regex == ("Traceback \\(most recent",)
    assert (traces.when.min_tokens, traces.route) == (3, "code")


def test_parse_registry_defaults(tmp_path: Path) -> None:
    loaded = parse_registry(VALID)
    assert (loaded.source, loaded.base_dir) == ("<string>", Path.cwd())
    assert parse_registry(VALID, base_dir=tmp_path).base_dir == tmp_path


def test_lookups_raise_key_error() -> None:
    reg = parse_registry(VALID).registry
    with pytest.raises(KeyError, match="no route named 'nope'"):
        reg.route("nope")
    with pytest.raises(KeyError, match="no model named 'nope'"):
        reg.model("nope")


def test_models_are_frozen() -> None:
    reg = parse_registry(VALID).registry
    with pytest.raises(ValidationError):
        reg.default = reg.default  # type: ignore[misc]
    with pytest.raises(ValidationError):
        reg.routes[0].target = "large"  # type: ignore[misc]


def test_defaults_for_optional_sections() -> None:
    text = """
providers: {p: {kind: anthropic, api_key_env: ANTHROPIC_API_KEY}}
models: {m: {provider: p, model: claude}}
routes: [{name: r, examples: [x], target: m}]
default: {target: m}
"""
    reg = parse_registry(text).registry
    assert reg.version == 1
    assert reg.encoder == BuiltinEncoderSpec(name="minilm", max_tokens=256, truncate="head")
    assert reg.providers["p"].base_url == "https://api.anthropic.com"
    assert reg.providers["p"].timeout_s == 60.0
    assert reg.models["m"].price.input == 0.0
    assert (reg.intent.method, reg.intent.k, reg.intent.threshold) == ("linear", 5, 0.5)
    assert reg.rules == ()
    assert reg.routes[0].policy.fallback == ()


def test_openai_encoder_and_rule_conditions() -> None:
    text = replace_line(
        VALID,
        2,
        "encoder: {kind: openai, base_url: 'http://127.0.0.1:8080/v1', model: bge-m3, "
        "api_key_env: EMBED_KEY, dimensions: 512}",
    )
    text = replace_line(
        text,
        34,
        "when: {regex: [a, b], keywords: [kubernetes, service mesh], metadata: {tier: 1}, "
        "has_tools: true, max_tokens: 900, header: {x-beta: '*'}}",
    )
    reg = parse_registry(text).registry
    assert isinstance(reg.encoder, OpenAIEncoderSpec)
    assert (reg.encoder.model, reg.encoder.batch_size, reg.encoder.dimensions) == (
        "bge-m3",
        64,
        512,
    )
    when = reg.rules[1].when
    assert when.regex == ("a", "b") and when.keywords == ("kubernetes", "service mesh")
    assert when.metadata == {"tier": "1"} and when.has_tools is True
    assert when.max_tokens == 900 and when.header == {"x-beta": "*"}


def test_anchors_and_merge_keys() -> None:
    text = VALID.replace(
        "    policy: {timeout_s: 30, fallback: [large], retries: 1}",
        "    policy: &strict {timeout_s: 30, fallback: [large], retries: 1}",
    ).replace(
        "    target: small\ndefault",
        "    target: small\n    policy: {<<: *strict, timeout_s: 5}\ndefault",
    )
    reg = parse_registry(text).registry
    chat = reg.route("chitchat")
    assert (chat.policy.timeout_s, chat.policy.fallback) == (5.0, ("large",))


def test_version_ignores_comments_layout_and_key_order() -> None:
    base = parse_registry(VALID).version
    reordered = yaml.safe_load(VALID)
    reordered = {key: reordered[key] for key in reversed(list(reordered))}
    reordered["models"] = dict(reversed(list(reordered["models"].items())))
    variants = [
        "# a comment\n" + VALID.replace("k: 3", "k: 3   # neighbours"),
        yaml.safe_dump(reordered, default_flow_style=False),
        yaml.safe_dump(yaml.safe_load(VALID), default_flow_style=True, width=10_000),
        VALID.replace("encoder: builtin:static", "encoder: {kind: builtin, name: static}"),
        VALID.replace("timeout_s: 30,", "timeout_s: 30.0,").replace("0.55", "0.550"),
        VALID.replace("X-Tenant", "x-tenant"),
        VALID.replace("output: 0.1}}", "output: 0.1}, vision: null, tools: null}", 1),
    ]
    assert [parse_registry(text).version for text in variants] == [base] * len(variants)


BUILTIN = "{kind: builtin, name: static, scripts: %s}"
ENDPOINT = "{kind: openai, base_url: 'http://h/v1', model: e, scripts: %s}"


@pytest.mark.parametrize(
    ("unset", "written", "default", "other"),
    [
        ("builtin:static", BUILTIN, "Latin", "cyrillic"),
        ("{kind: openai, base_url: 'http://h/v1', model: e}", ENDPOINT, "any", "latin"),
    ],
)
def test_the_scripts_an_encoder_reads_unset_keep_the_version(
    unset: str, written: str, default: str, other: str
) -> None:
    """`scripts` is None unless written (the encoder's own: latin for a built-in, any
    for an endpoint), so writing that default out changed the version, as did the order
    of a list."""

    def version(encoder: str) -> str:
        return parse_registry(replace_line(VALID, 2, f"encoder: {encoder}")).version

    assert version(written % default) == version(unset)
    assert version(written % other) != version(unset)
    assert version(BUILTIN % "[latin, cyrillic]") == version(BUILTIN % "[Cyrillic, latin]")
    assert version(BUILTIN % "[latin, cyrillic]") != version(BUILTIN % "[latin]")


def test_a_key_added_to_the_schema_keeps_the_version_of_registries_without_it() -> None:
    """Defaults are left out of the hash: this literal holds while llmroute gains keys
    (it moved when `vision` and `tools` were added, before defaults were left out). Change
    it only when the hashing itself changes, and say so in the release notes."""
    assert parse_registry(VALID).version == "46e17ba264db"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("threshold: 0.55", "threshold: 0.56"),
        ("threshold: 0.4", "threshold: 0.45"),
        ('"debug this SQL query"', '"debug this SQL query please"'),
        ("fallback: [large]", "fallback: []"),
        ("version: 3", "version: 4"),
        ("X-Tenant: acme", "X-Tenant: acme2"),
    ],
)
def test_version_changes_with_meaning(old: str, new: str) -> None:
    assert old in VALID
    assert parse_registry(VALID.replace(old, new)).version != parse_registry(VALID).version


def test_rule_order_changes_the_version() -> None:
    reg = parse_registry(VALID).registry
    swapped = reg.model_copy(update={"rules": reg.rules[::-1]})
    assert registry_pkg.version_of(swapped) != registry_pkg.version_of(reg)


def test_dump_round_trips_to_the_same_version(tmp_path: Path) -> None:
    for source in (VALID, EXAMPLE.read_text()):
        loaded = parse_registry(source)
        text = dump_registry(loaded.registry)
        path = tmp_path / "dumped.yaml"
        path.write_text(text)
        again = load_registry(path)
        assert again.version == loaded.version
        assert again.registry == loaded.registry
        assert dump_registry(again.registry) == text


@pytest.mark.parametrize("odd", ["\\N", "\\L", "\\P", "\\v", "\\f", "\\x1c", "\\x1e"])
def test_dump_keeps_the_characters_python_splits_lines_at(odd: str) -> None:
    """The blank lines between sections were put in with `str.splitlines`, which also
    splits at U+2028, NEL, a form feed...: each became a newline YAML folded into a
    space (a description, an example, a fim_template changed, and the version). `odd`
    is YAML's escape of one."""
    text = replace_line(VALID, 20, f'description: "a{odd}b {"x" * 120}{odd}"')
    loaded = parse_registry(text)
    again = parse_registry(dump_registry(loaded.registry))
    assert again.registry.routes[0].description == loaded.registry.routes[0].description
    assert again.version == loaded.version


def test_dump_is_clean_yaml() -> None:
    text = dump_registry(parse_registry(VALID).registry)
    assert text.startswith("version: 3\n\nencoder: builtin:static\n\nproviders:\n")
    assert "price: {input: 0.1, output: 0.1}" in text
    assert "fallback: [large]" in text
    assert "\n  - name: code\n" in text  # list items indented under their key
    for default in (" window:", "batch_size", "out_of_scope", "description: null", "rules: []"):
        assert default not in text
    assert text.count("\n\n") == 7  # one blank line between sections


def test_dump_writes_a_non_default_encoder_as_a_mapping() -> None:
    text = replace_line(VALID, 2, "encoder: {kind: builtin, name: minilm, truncate: head_tail}")
    dumped = dump_registry(parse_registry(text).registry)
    assert "encoder: {kind: builtin, name: minilm, truncate: head_tail}" in dumped


def test_dump_accepts_a_registry_built_in_python() -> None:
    reg = Registry.model_validate(yaml.safe_load(VALID))
    assert parse_registry(dump_registry(reg)).registry == reg


def test_public_names_are_sorted_and_exported() -> None:
    assert registry_pkg.__all__ == sorted(registry_pkg.__all__)
    for name in registry_pkg.__all__:
        assert hasattr(registry_pkg, name), name


def test_relative_path_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "reg.yaml").write_text(VALID)
    monkeypatch.chdir(tmp_path)
    loaded = load_registry("reg.yaml")
    assert loaded.source == "reg.yaml" and loaded.base_dir == tmp_path.resolve()
    assert load_registry(Path(os.fspath(tmp_path / "reg.yaml"))).version == loaded.version


def test_rule_header_and_metadata_values_are_matched_as_written() -> None:
    """YAML 1.1 reads an unquoted 0123 as 83, 1.10 as 1.1, 0x1F as 31 and on as true: a
    rule written so silently never matched what a client sends."""
    when = (
        "when: {header: {x-a: 0123, x-b: 1.10, x-c: 0x1F, x-d: on, x-e: '007'}, "
        "metadata: {tier: 1, beta: yes}}"
    )
    reg = parse_registry(replace_line(VALID, 34, when)).registry
    parsed = reg.rules[1].when
    assert parsed.header == {"x-a": "0123", "x-b": "1.10", "x-c": "0x1F", "x-d": "on", "x-e": "007"}
    assert parsed.metadata == {"tier": "1", "beta": "yes"}


def test_a_base_url_may_name_a_short_host() -> None:
    """`http://vllm` (a container's service name) was refused as too short."""
    text = VALID.replace("http://127.0.0.1:8001/v1", "http://vllm")
    assert parse_registry(text).registry.providers["local"].base_url == "http://vllm"
