"""`encoder.scripts`: what the encoder reads, as the intent layer's check takes it."""

from __future__ import annotations

import pytest
from registry_helpers import VALID, assert_points_at, errors_of, replace_line

from llmroute.registry import dump_registry, parse_registry, summarize
from llmroute.registry.lint import lint

# VALID's line 2 is `encoder: builtin:static`
BLOCK = "encoder:\n  kind: builtin\n  name: static\n  scripts:\n    - latin\n    - %s\n    - %s\n"


def with_encoder(encoder: str) -> str:
    return replace_line(VALID, 2, encoder.rstrip("\n"))


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("any", "any"),
        ("ANY", "any"),
        ("Latin", ("latin",)),
        ("[latin, Cyrillic, han]", ("latin", "cyrillic", "han")),
    ],
)
def test_scripts_take_any_one_name_or_a_list(written: str, read: object) -> None:
    text = with_encoder(f"encoder: {{kind: builtin, name: static, scripts: {written}}}")
    registry = parse_registry(text, source="reg.yaml").registry
    assert registry.encoder.scripts == read
    again = parse_registry(dump_registry(registry), source="again.yaml").registry
    assert again.encoder.scripts == read


def test_each_bad_entry_is_named_with_its_line() -> None:
    errors = errors_of(with_encoder(BLOCK % ("latn", "latin")))
    assert len(errors) == 2, errors
    first, second = sorted(errors, key=lambda e: e.line or 0)
    assert_points_at(first, 7, "encoder.scripts[1]", "unknown script 'latn'", "'latin'?")
    assert "cyrillic" in first.message and "han" in first.message  # the names it knows
    assert_points_at(second, 8, "encoder.scripts[2]", "'latin' is already listed (at [0])")
    (alone,) = errors_of(with_encoder(BLOCK % ("any", "han")))
    assert_points_at(alone, 7, "encoder.scripts[1]", "'any' stands alone: write scripts: any")
    (number,) = errors_of(with_encoder(BLOCK % ("3", "han")))
    assert_points_at(number, 7, "encoder.scripts[1]", "must be a script name, not the int 3")


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("[]", "must name at least one script, or be 'any'"),
        ("5", "must be 'any', a script name or a list of them"),
        ("{latin: true}", "must be 'any', a script name or a list of them"),
    ],
)
def test_scripts_that_name_nothing_are_refused(written: str, said: str) -> None:
    (error,) = errors_of(
        with_encoder(
            f"encoder: {{kind: openai, base_url: 'http://h/v1', model: e, scripts: {written}}}"
        )
    )
    assert_points_at(error, 2, "encoder.scripts", said)


def test_the_summary_says_what_the_encoder_reads() -> None:
    def encoder_line(encoder: str) -> str:
        lines = summarize(parse_registry(with_encoder(encoder), source="reg.yaml"))
        return next(line for line in lines if line.startswith("encoder: "))

    assert encoder_line("encoder: builtin:static").endswith("truncate head, reads latin)")
    any_script = "encoder: {kind: builtin, name: static, scripts: any}"
    assert encoder_line(any_script).endswith("truncate head, reads any script)")
    endpoint = "encoder: {kind: openai, base_url: 'http://h/v1', model: e5%s}"
    assert "reads" not in encoder_line(endpoint % "")
    assert "e5 at http://h/v1, reads latin, cyrillic (no key)" in encoder_line(
        endpoint % ", scripts: [latin, cyrillic]"
    )


def test_examples_the_check_would_not_score_are_a_warning() -> None:
    """Examples in a script the encoder does not read teach the intent head nothing it
    uses: requests like them are never scored."""
    text = with_encoder("encoder: builtin:static").replace(
        'examples: ["hi there!", "how are you today?"]',
        'examples: ["hi there!", "你好！", "how are you today?", "最近怎么样？"]',
    )
    (warning,) = [w for w in lint(parse_registry(text).registry) if "script" in w]
    assert warning.startswith(
        "routes[1].examples[1]: 2 of 4 are mostly in a script the encoder does not read "
        "(Han 100% of the letters of [1])"
    )
    assert warning.endswith("name it in encoder.scripts (reads now: latin)")
    told = text.replace(
        "encoder: builtin:static", "encoder: {kind: builtin, name: static, scripts: [latin, han]}"
    )
    assert not [w for w in lint(parse_registry(told).registry) if "script" in w]
