"""`registry check`'s warnings: what is valid but probably unmeant."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from llmroute.registry import load_registry, parse_registry
from llmroute.registry.lint import lint, lint_files

ROOT = Path(__file__).resolve().parents[2]
LLMROUTE = str(Path(sys.executable).parent / "llmroute")

TEXT = """
encoder: builtin:static
providers: {p: {kind: openai, base_url: "http://127.0.0.1:9/v1"}}
models: {m: {provider: p, model: m}}
intent: {out_of_scope: ["“Hello  there”", what time is it]}
routes:
  - {name: a, examples: [hello there, fix my bug], target: m}
  - {name: b, examples: ["Hello there!", what is love, fix my bug., "what is love?"], target: m}
default: {target: m}
"""


def test_an_example_taught_as_two_labels_is_a_warning() -> None:
    warnings = lint(parse_registry(TEXT).registry)
    assert [w.split(":")[0] for w in warnings] == [
        "routes[1].examples[0]",
        "routes[1].examples[2]",
        "intent.out_of_scope[0]",
    ]
    assert "is also an example of route 'a' (routes[0].examples[0])" in warnings[0]
    # the same text twice in one route is not a conflict of labels
    assert not any("what is love" in w for w in warnings)


def test_a_registry_whose_examples_did_not_change_is_not_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gateway lints every registry it reloads, right after the swap: reading every
    example again there held the GIL against the new registry's first requests. A
    reload that leaves the examples as they were (a model added) reuses their
    warnings; one that edits them, or renames a route, reads them again."""
    from llmroute.registry import lint as linting

    keyed: list[str] = []
    original = linting._key

    def counting(text: str) -> str:
        keyed.append(text)
        return original(text)

    monkeypatch.setattr(linting, "_key", counting)
    text = TEXT.replace("what is love?", "what is love, really?")  # not linted before
    first = lint(parse_registry(text).registry)
    assert keyed  # read

    keyed.clear()
    added = text.replace(
        "models: {m: {provider: p, model: m}}",
        "models: {m: {provider: p, model: m}, n: {provider: p, model: n}}",
    )
    assert lint(parse_registry(added).registry) == first
    assert keyed == []  # not read again

    renamed = lint(parse_registry(added.replace("name: a,", "name: a2,")).registry)
    assert keyed  # read again, and said with the new name
    assert "is also an example of route 'a2' (routes[0].examples[0])" in renamed[0]


def test_the_example_registry_has_none() -> None:
    assert lint(load_registry(ROOT / "examples" / "registry.yaml").registry) == []


def test_check_prints_them_and_strict_fails(tmp_path: Path) -> None:
    path = tmp_path / "registry.yaml"
    path.write_text(TEXT)
    plain = subprocess.run(
        [LLMROUTE, "registry", "check", str(path)], capture_output=True, text=True, check=False
    )
    assert plain.returncode == 0 and plain.stdout.rstrip().endswith("ok (3 warnings)")
    assert plain.stderr.count("warning: ") == 3
    strict = subprocess.run(
        [LLMROUTE, "registry", "check", "--strict", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert strict.returncode == 1


def test_serve_logs_them_at_each_load(caplog: pytest.LogCaptureFixture) -> None:
    from llmroute.server.reload import warn_registry

    with caplog.at_level(logging.WARNING):
        warn_registry(parse_registry(TEXT).registry)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("registry: ")]
    assert len(lines) == 3 and lines[0].startswith("registry: routes[1].examples[0]: ")


POOL = """
encoder: builtin:static
providers: {p: {kind: openai, base_url: "http://127.0.0.1:9/v1"}}
models:
  text: {provider: p, model: t, vision: false}
  plain: {provider: p, model: t2, vision: false, tools: false}
  seer: {provider: p, model: s}
  emb: {provider: p, model: e, kind: embedding}
routes:
  - {name: a, examples: [hello there], target: text, policy: {fallback: [seer]}}
  - {name: b, examples: [fix my bug], target: text}
default: {target: plain}
"""


def test_a_route_no_model_of_which_takes_images_is_a_warning() -> None:
    warnings = lint(parse_registry(POOL).registry)
    assert [w.split(":")[0] for w in warnings] == ["routes[1]", "default", "default"]
    assert warnings[0] == (
        "routes[1]: none of its models (text) takes images (vision: false): a request with "
        "images sent here gets a 400, though seer would take it; add one to its "
        "policy.fallback, or route them with a rule (when: {has_images: true})"
    )
    assert "takes tools (tools: false)" in warnings[2] and "seer, text would" in warnings[2]


def test_a_rule_taking_every_such_request_closes_the_gap() -> None:
    rules = "rules:\n  - {name: pictures, when: {has_images: true}, target: seer}\n"
    warnings = lint(parse_registry(POOL + rules).registry)
    assert [w.split(":")[0] for w in warnings] == ["default"]  # tools only


def test_a_rule_sending_them_where_they_are_refused_is_a_warning() -> None:
    rules = (
        "rules:\n"
        "  - {name: some, when: {has_images: true, keywords: [scan]}, target: text}\n"
        "  - {name: all, when: {has_images: true}, route: a}\n"
    )
    warnings = lint(parse_registry(POOL + rules).registry)
    assert (
        warnings[0] == "rules[0]: sends requests with images to text, which declares vision: false"
    )
    # rule 1 sends them to route a, whose fallback takes them: only the tools gap is left
    assert [w.split(":")[0] for w in warnings] == ["rules[0]", "default"]


def test_a_content_or_context_fallback_does_not_close_the_gap() -> None:
    """Only a refusal for content or length reaches them; a request with images sent to
    a target that takes none is a 400, which the lint said nothing about."""
    text = POOL.replace(
        "{name: a, examples: [hello there], target: text, policy: {fallback: [seer]}}",
        "{name: a, examples: [hello there], target: text, policy: {content_fallback: seer}}",
    )
    warnings = lint(parse_registry(text).registry)
    assert [w.split(":")[0] for w in warnings][:4] == [
        "routes[0]",
        "routes[1]",
        "default",
        "default",
    ]
    assert "none of its models (text) takes images" in warnings[0]


def test_a_pool_that_takes_no_images_says_so_on_purpose() -> None:
    text = POOL.replace("  seer: {provider: p, model: s}\n", "").replace(
        "policy: {fallback: [seer]}", "policy: {}"
    )
    warnings = lint(parse_registry(text).registry)
    assert [w.split(":")[0] for w in warnings] == ["default"]
    assert "takes tools" in warnings[0]  # text takes tools; no model takes images


def test_a_route_served_by_llamacpp_alone_takes_no_images_or_tools() -> None:
    """A llamacpp model reads text and calls no tools whatever it declares; a route of
    such models alone, in a pool where another model takes them, is the same gap."""
    text = """
encoder: builtin:static
providers:
  local: {kind: llamacpp}
  p: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  gemma: {provider: local, model: gemma.gguf}
  big: {provider: p, model: gpt-4.1}
routes:
  - {name: a, examples: [hello there], target: gemma, policy: {fallback: [big]}}
  - {name: b, examples: [fix my bug], target: gemma}
default: {target: big}
rules:
  - {name: pics, when: {has_images: true, keywords: [scan]}, target: gemma}
"""
    warnings = lint(parse_registry(text).registry)
    assert [w.split(":")[0] for w in warnings] == ["rules[0]", "routes[1]", "routes[1]"]
    assert warnings[0] == (
        "rules[0]: sends requests with images to gemma, which takes none (vision: false, "
        "or served by llamacpp)"
    )
    assert warnings[1].startswith(
        "routes[1]: none of its models (gemma) takes images (vision: false, or served by "
        "llamacpp): a request with images sent here gets a 400, though big would take it"
    )
    assert "takes tools (tools: false, or served by llamacpp)" in warnings[2]


def test_upgrade_affinity_with_unpriced_models_is_a_warning() -> None:
    priced = POOL.replace("model: s}", "model: s, price: {input: 1, output: 2}}")
    warnings = lint(parse_registry(priced + "affinity: {}\n").registry)
    assert warnings[-1] == (
        "affinity: mode upgrade keeps the costlier model, but plain, text have no price "
        "(counted as free); give every chat model a price, or use mode: keep"
    )
    assert not any("affinity" in w for w in lint(parse_registry(POOL + "affinity: {}\n").registry))
    keep = priced + "affinity: {mode: keep}\n"
    assert not any("affinity" in w for w in lint(parse_registry(keep).registry))


OPENAI = """
encoder: builtin:static
providers:
  openai: {kind: openai, base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY}
  local: {kind: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  thinker: {provider: openai, model: o4-mini}
  dated: {provider: openai, model: gpt-5-mini-2025-08-07}
  fitted:
    provider: openai
    model: o3
    rename_params: {max_tokens: max_completion_tokens}
    drop_params: [temperature, top_p]
  chat: {provider: openai, model: gpt-4.1}
  self-hosted: {provider: local, model: o3}
routes:
  - {name: a, examples: [hello there], target: chat}
intent: {out_of_scope: [what is the weather]}  # a lone route, warned about elsewhere
default: {target: chat}
"""


def test_an_openai_reasoning_model_sent_what_it_refuses_is_a_warning() -> None:
    warnings = lint(parse_registry(OPENAI).registry)
    assert [w.split(":")[0] for w in warnings] == ["models.thinker", "models.dated"]
    assert warnings[0] == (
        "models.thinker: o4-mini on OpenAI's API refuses max_tokens, temperature and top_p, "
        "which clients send to the router: add rename_params: {max_tokens: "
        "max_completion_tokens} and drop_params: [temperature, top_p]"
    )


def test_a_content_fallback_behind_the_same_filter_is_a_warning() -> None:
    same = OPENAI.replace(
        "{name: a, examples: [hello there], target: chat}",
        "{name: a, examples: [hello there], target: chat, policy: {content_fallback: fitted}}",
    )
    warnings = [w for w in lint(parse_registry(same).registry) if w.startswith("routes")]
    assert warnings == [
        "routes[0] (a): content_fallback fitted is served at the endpoint of its target chat, "
        "whose content filter is likely to refuse what it refused (unless it filters models "
        "apart): a model of another provider is the usual choice"
    ]
    elsewhere = same.replace("content_fallback: fitted", "content_fallback: self-hosted")
    assert not any(w.startswith("routes") for w in lint(parse_registry(elsewhere).registry))


BUDGETS = """
encoder: builtin:static
providers: {p: {kind: openai, base_url: "http://127.0.0.1:9/v1"}}
models:
  free: {provider: p, model: f, max_output_tokens: 100, budget: {usd: 5}}
  long:
    provider: p
    model: l
    price: {input: 2, output: 8}
    max_output_tokens: 32768
    budget: {usd: 0.1, hard: true}
  capped:
    provider: p
    model: c
    price: {input: 2, output: 8}
    max_output_tokens: 32768
    params: {max_tokens: 1024}
    budget: {usd: 0.1, hard: true}
routes:
  - {name: a, examples: [hello there], target: long}
intent: {out_of_scope: [what is the weather]}
default: {target: long}
auth:
  keys:
    - {name: team, key_env: TEAM_KEY, budget: {usd: 0.2, hard: true}}
    - {name: small, key_env: SMALL_KEY, budget: {usd: 0.2, hard: true}, pool: [capped, free]}
"""


def test_budgets_nothing_counts_against_or_no_call_fits_in_are_warnings() -> None:
    warnings = lint(parse_registry(BUDGETS).registry)
    assert [w.split(":")[0] for w in warnings] == [
        "models.free.budget",
        "models.long.budget",
        "auth.keys[0].budget",
    ]
    assert "has no price" in warnings[0]
    # 32,768 answer tokens at $8 per million: $0.26, more than $0.1 and $0.2
    assert (
        "$0.2621 for its answer alone (up to 32,768 tokens), more than the whole hard "
        in (warnings[1])
    )
    assert "a request to long without max_tokens" in warnings[2]
    # long declares its max_output_tokens: the hint does not ask for one (it did, "set
    # the model's max_output_tokens or params.max_tokens"), it names the default length
    assert warnings[1].endswith(
        "only requests asking for shorter answers are ever sent; set params.max_tokens on "
        "the model (the answer length of a request that sets none; max_output_tokens, "
        "32,768, is its API's cap), or a larger budget"
    ), warnings[1]
    unbounded = BUDGETS.replace(
        "    max_output_tokens: 32768\n    budget", "    context_window: 32768\n    budget"
    )
    assert lint(parse_registry(unbounded).registry)[1].endswith(
        "set the model's max_output_tokens or params.max_tokens, or a larger budget"
    )
    fitted = BUDGETS.replace("params: {max_tokens: 1024}", "params: {max_tokens: 20000}")
    assert lint(parse_registry(fitted).registry)[3].endswith(
        "set a smaller params.max_tokens on the model (20,000), or a larger budget"
    ), lint(parse_registry(fitted).registry)


def test_a_lone_route_on_the_linear_head_is_a_warning() -> None:
    """A softmax over one class scores it 1.0 for every prompt: it takes every request
    and the default (a difficulty router, say) never serves."""
    text = (
        "encoder: builtin:static\n"
        "providers: {p: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}}\n"
        "models: {a: {provider: p, model: a}}\n"
        "routes:\n  - {name: code, examples: [fix my bug], target: a}\n"
        "default: {target: a}\n"
    )
    (warning,) = lint(parse_registry(text).registry)
    assert warning.startswith("routes: 'code' is the only route and intent.out_of_scope")
    with_oos = text + "intent: {out_of_scope: [what is the weather]}\n"
    assert lint(parse_registry(with_oos).registry) == []


CLAUDE = """
encoder: builtin:static
providers: {claude: {kind: anthropic, base_url: "http://127.0.0.1:9"}}
models:
  opus: {provider: claude, model: claude-opus-4-7, reasoning: {thinking: budget}}
  sonnet: {provider: claude, model: claude-sonnet-4-5, reasoning: {thinking: adaptive}}
  fine: {provider: claude, model: claude-opus-4-6, reasoning: {thinking: budget}}
  auto: {provider: claude, model: claude-opus-4-7, reasoning: {effort: high}}
  alias: {provider: claude, model: my-claude, reasoning: {thinking: adaptive}}
routes:
  - {name: a, examples: [hello there], target: fine}
intent: {out_of_scope: [what is the weather]}
default: {target: fine}
"""


def test_a_claude_told_the_thinking_form_its_version_refuses_is_a_warning() -> None:
    warnings = [w for w in lint(parse_registry(CLAUDE).registry) if w.startswith("models")]
    assert warnings == [
        "models.opus.reasoning.thinking: claude-opus-4-7 refuses budget_tokens (it takes "
        "only adaptive thinking): set thinking: auto, or the form it takes",
        "models.sonnet.reasoning.thinking: claude-sonnet-4-5 refuses adaptive thinking (it "
        "takes only budget_tokens): set thinking: auto, or the form it takes",
    ]


SHARED_GGUF = """\
encoder: builtin:static
providers:
  local: {kind: llamacpp}
models:
  chat: {provider: local, model: models/gone.gguf}
  code:
    deployments: [{provider: local, model: ./models/../models/gone.gguf}]
    model: any
  solo: {provider: local, model: other.gguf}
routes:
  - {name: a, examples: [hello there], target: chat}
  - {name: b, examples: [fix my bug], target: code}
default: {target: solo}
"""


def test_a_missing_gguf_two_models_share_is_told_with_both(tmp_path: Path) -> None:
    """Once per file, at its first line, naming the other model too (however its path
    is spelled): the second model was never said to need the file."""
    registry = tmp_path / "registry.yaml"
    registry.write_text(SHARED_GGUF)
    warnings = lint_files(load_registry(registry))
    assert warnings == [
        f"{registry}:5: models.chat.model: GGUF file not found: {tmp_path / 'models' / 'gone.gguf'}"
        " (a path relative to the registry's folder, or package:NAME); also named by "
        "models.code.deployments[0].model (line 7); `llmroute serve` does not start without it",
        f"{registry}:9: models.solo.model: GGUF file not found: {tmp_path / 'other.gguf'} (a "
        "path relative to the registry's folder, or package:NAME); `llmroute serve` does not "
        "start without it",
    ]


def test_the_defaults_fallback_closes_the_gap_and_its_content_fallback_is_checked() -> None:
    """A model the default's `policy.fallback` names serves its requests with images or
    tools (the hint now offers it); its `content_fallback` behind its target's filter is
    the same warning as a route's."""
    warnings = lint(parse_registry(POOL).registry)
    assert [w.split(":")[0] for w in warnings] == ["routes[1]", "default", "default"]
    assert warnings[1].endswith(
        "add one to its policy.fallback, or route them with a rule (when: {has_images: true})"
    )
    text = POOL.replace(
        "default: {target: plain}", "default: {target: plain, policy: {fallback: [seer]}}"
    )
    assert [w.split(":")[0] for w in lint(parse_registry(text).registry)] == ["routes[1]"]
    same = OPENAI.replace(
        "default: {target: chat}", "default: {target: chat, policy: {content_fallback: fitted}}"
    )
    warnings = [w for w in lint(parse_registry(same).registry) if w.startswith("default")]
    assert warnings == [
        "default: content_fallback fitted is served at the endpoint of its target chat, "
        "whose content filter is likely to refuse what it refused (unless it filters models "
        "apart): a model of another provider is the usual choice"
    ]


@pytest.mark.parametrize(
    ("difficulty", "role"),
    [
        ("{router: routers/mlp, strong: chat, weak: self-hosted, threshold: 0.5}", "strong model"),
        ("{router: routers/mlp, strong: self-hosted, weak: chat, threshold: 0.5}", "weak model"),
    ],
)
def test_the_defaults_content_fallback_is_checked_against_its_difficulty_models(
    difficulty: str, role: str
) -> None:
    """The default's requests are served by the difficulty router's strong or weak
    model, not only its target: a `content_fallback` behind one of their filters is
    warned about, naming it. Only the target was compared (here another provider's)."""
    text = OPENAI.replace(
        "default: {target: chat}",
        "default:\n  target: self-hosted\n  policy: {content_fallback: fitted}\n"
        f"  difficulty: {difficulty}",
    )
    warnings = [w for w in lint(parse_registry(text).registry) if w.startswith("default")]
    assert warnings == [
        f"default: content_fallback fitted is served at the endpoint of its {role} chat, "
        "whose content filter is likely to refuse what it refused (unless it filters models "
        "apart): a model of another provider is the usual choice"
    ]
    elsewhere = text.replace("content_fallback: fitted", "content_fallback: self-hosted")
    assert not any(w.startswith("default") for w in lint(parse_registry(elsewhere).registry))


def test_a_ner_model_that_no_entity_uses_is_a_warning() -> None:
    """`ner_model` with `entities` naming neither PERSON nor LOCATION loaded and checked
    nothing: the operator who set it believed names were being redacted."""
    base = TEXT + "safety:\n  pii: {ner_model: en_core_web_sm, entities: [EMAIL, PHONE]}\n"
    warnings = lint(parse_registry(base).registry)
    said = [w for w in warnings if w.startswith("safety.pii.ner_model:")]
    assert said == [
        "safety.pii.ner_model: set, but safety.pii.entities names neither PERSON nor "
        "LOCATION, the only types it finds: no name or place is detected; add them to "
        "entities, or remove ner_model"
    ], warnings
    used = base.replace("[EMAIL, PHONE]", "[EMAIL, PERSON]")
    assert not [w for w in lint(parse_registry(used).registry) if "ner_model" in w]


def test_check_names_each_warnings_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lint warnings named a field alone (`routes[1].examples[0]: ...`), where the
    errors and the GGUF and credential warnings of the same command name the file and
    line: in a registry of 150 routes the reader had to count list items."""
    from llmroute.cli._app import run

    path = tmp_path / "registry.yaml"
    path.write_text(TEXT)
    capsys.readouterr()
    assert run(["registry", "check", str(path)]) == 0
    warnings = [w for w in capsys.readouterr().err.splitlines() if w.startswith("warning: ")]
    assert [w.split(": ")[1] for w in warnings] == [f"{path}:8", f"{path}:8", f"{path}:5"]
    assert warnings[0].startswith(f"warning: {path}:8: routes[1].examples[0]: 'Hello there!'")


def test_a_gguf_path_the_file_system_cannot_look_up_is_a_warning(tmp_path: Path) -> None:
    """A file name past the file system's 255 bytes: `Path.is_file` raised OSError (File
    name too long) out of `registry check` (found by fuzz_registry.py --extended)."""
    registry = tmp_path / "registry.yaml"
    name = "g" * 300 + ".gguf"
    registry.write_text(SHARED_GGUF.replace("other.gguf", name))
    warnings = lint_files(load_registry(registry))
    assert warnings[1] == (
        f"{registry}:9: models.solo.model: GGUF file not found: {tmp_path / name} (File name "
        "too long; a path relative to the registry's folder, or package:NAME); `llmroute "
        "serve` does not start without it"
    )
