"""Registry values the loader fuzz left loading or crashing: overlong or line-broken
names, explicit YAML tags, integers past any range. Each is one error naming file, line
and field."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError
from registry_helpers import VALID, one_error

from llmroute.errors import ConfigError
from llmroute.registry import parse_registry
from llmroute.registry.cases import parse_cases
from llmroute.registry.schema import MAX_NAME_CHARS, Registry

LONG = "n" * (MAX_NAME_CHARS + 1)
AT_LIMIT = "n" * MAX_NAME_CHARS

# one more of each named thing: put first in its section, or a section added
NAMED = {
    "models": "models:\n  {name}: {{provider: local, model: up}}\n",
    "providers": "providers:\n  {name}: {{kind: openai, base_url: 'http://127.0.0.1:1/v1'}}\n",
    "routes": "routes:\n  - {{name: {name}, examples: [tell me a joke], target: small}}\n",
    "rules": "rules:\n  - {{name: {name}, when: {{has_tools: true}}, target: large}}\n",
    "auth.keys": "auth:\n  keys:\n    - {{name: {name}, key_env: LLMROUTE_KEY}}\n",
    "safety.profiles": "safety:\n  profiles: {{standard: {{}}, {name}: {{}}}}\n",
    "aliases": "aliases:\n  {name}: small\n",
}


def _with(section: str, name: str) -> str:
    """VALID with one more entry of `section` named `name` (a YAML scalar as written)."""
    added = NAMED[section].format(name=name)
    head = added.split("\n", 1)[0] + "\n"
    return VALID.replace(head, added, 1) if head in VALID else VALID + added


@pytest.mark.parametrize("section", list(NAMED))
def test_a_name_at_the_limit_loads(section: str) -> None:
    parse_registry(_with(section, AT_LIMIT))


@pytest.mark.parametrize("section", list(NAMED))
def test_a_name_past_the_limit_is_one_error_at_its_line(section: str) -> None:
    """A megabyte name loaded, and went on to metrics labels, headers and log lines."""
    text = _with(section, LONG)
    error = one_error(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if LONG in row)
    assert error.file == "reg.yaml" and error.line == line, error
    assert error.field is not None and error.field.startswith(section), error
    assert f"at most {MAX_NAME_CHARS} characters" in error.message, error
    assert LONG not in str(error)  # neither the message nor the field echoes it whole


@pytest.mark.parametrize("section", ["models", "providers", "routes", "rules", "auth.keys"])
@pytest.mark.parametrize("name", ['"x\\n"', '"x\\r\\n"', '"x\\ry"', '"xä"'])
def test_a_name_with_a_line_break_or_non_ascii_is_refused(section: str, name: str) -> None:
    """A pool model or route named ``"small\\n"`` loaded (``$`` matches before a final
    newline); every answer then broke on its ``x-llmroute-model`` or ``-route`` header
    (uvicorn: "Invalid HTTP header value", the client an empty reply)."""
    error = one_error(_with(section, name))
    assert error.field is not None and error.field.startswith(section), error
    assert error.line is not None and "invalid name" in error.message, error


@pytest.mark.parametrize("section", ["safety.profiles", "aliases"])
@pytest.mark.parametrize("name", ['"x\\n"', '"x\\r\\ny"', '"x\\x00"'])
def test_a_profile_or_alias_name_with_a_control_character_is_refused(
    section: str, name: str
) -> None:
    error = one_error(_with(section, name))
    assert error.field is not None and error.field.startswith(section), error
    assert error.line is not None and "control character" in error.message, error


@pytest.mark.parametrize(
    ("provider", "field"),
    [
        ('{kind: vertex, project: my-project, region: "us-east5\\n"}', "region"),
        ('{kind: vertex, project: "my-project\\n", region: us-east5}', "project"),
        ('{kind: bedrock, region: "eu-central-1\\n"}', "region"),
        ('{kind: openai, base_url: "http://x/v1", api_key_env: "KEY\\n"}', "api_key_env"),
    ],
)
def test_a_region_project_or_variable_with_a_final_newline_is_refused(
    provider: str, field: str
) -> None:
    """``$`` matched before a final newline: a region went into the URL's host with it."""
    error = one_error(
        VALID.replace(
            'local: {kind: openai, base_url: "http://127.0.0.1:8001/v1"}', f"local: {provider}"
        )
    )
    assert error.line == 4 and error.field == f"providers.local.{field}", error


DESCRIPTION = "    description: programming help"  # line 20: routes[0].description


@pytest.mark.parametrize(
    "value",
    [
        "!!binary aGk=",  # loaded as the string 'hi'
        "!!timestamp 2026-01-01",
        "!!set {a, b}",
        "!!omap [a: 1]",
        "!!pairs [a: 1]",
        "!!python/object:os.system {}",
        "!!python/name:os.system ''",
        "!!python/object/apply:os.system [echo]",
        "!custom thing",
        "!!int abc",  # crashed: ValueError
        "!!float abc",  # ValueError
        "!!bool maybe",  # KeyError
        "!!timestamp abc",  # AttributeError
    ],
)
def test_an_explicit_tag_is_one_error_at_its_field(value: str) -> None:
    error = one_error(VALID.replace(DESCRIPTION, f"    description: {value}"))
    assert (error.line, error.field) == (20, "routes[0].description"), error
    assert error.message.startswith(f"the tag {value.split()[0]}"), error


@pytest.mark.parametrize("key", ["!!python/name:os.system x", "!!int abc", "!foo bar"])
def test_a_key_with_an_explicit_tag_is_one_error_at_its_line(key: str) -> None:
    error = one_error(VALID.replace(DESCRIPTION, f"    {key}: programming help"))
    assert error.line == 20 and error.field is not None, error
    assert error.field.startswith("routes[0]") and "tag" in error.message, error


def test_the_plain_scalar_tags_still_load() -> None:
    """``!!str 12`` is how YAML keeps a number a string; the core scalar tags stand."""
    text = VALID.replace(DESCRIPTION, "    description: !!str 12").replace(
        "threshold: 0.55", "threshold: !!float 0.55"
    )
    route = parse_registry(text.replace("k: 3", "k: !!int 3")).registry.routes[0]
    assert (route.description, route.threshold) == ("12", 0.55)


def test_no_tag_constructs_a_python_object() -> None:
    """The loader reads with PyYAML's safe loader: a python/ tag is refused, not run."""
    error = one_error(
        VALID.replace(DESCRIPTION, "    description: !!python/object/apply:os.getpid []")
    )
    assert "python/object/apply" in error.message


def test_a_plain_value_yaml_1_1_gives_a_type_of_its_own_is_read() -> None:
    """``=`` and ``<<`` (YAML 1.1's value and merge tags, where no key is merged) are text;
    ``2026-13-45``, a date YAML cannot build, is one error (it crashed: ValueError)."""
    for plain in ("=", "<<"):
        loaded = parse_registry(VALID.replace(DESCRIPTION, f"    description: {plain}"))
        assert loaded.registry.routes[0].description == plain
    error = one_error(VALID.replace(DESCRIPTION, "    description: 2026-13-45"))
    assert (error.line, error.field) == (20, "routes[0].description"), error
    assert "quote it" in error.message


@pytest.mark.parametrize(
    ("line", "old", "field", "digits"),
    [
        (17, "threshold: 0.4", "intent.threshold", 400),  # "a valid number (got an integer)"
        (16, "k: 3", "intent.k", 400),  # an integer field: loaded
        (16, "k: 3", "intent.k", 20),
        (12, "context_window: 1047576", "models.large.context_window", 20),
        (12, "context_window: 1047576", "models.large.context_window", -400),
    ],
)
def test_an_integer_past_any_range_is_out_of_range(
    line: int, old: str, field: str, digits: int
) -> None:
    """Past a 64-bit integer (an integer field), past a float (a number field)."""
    written = "-" * (digits < 0) + "9" * abs(digits)
    error = one_error(VALID.replace(old, f"{old.split(':')[0]}: {written}"))
    assert (error.line, error.field) == (line, field), error
    assert "out of range" in error.message and written not in error.message, error


def test_an_integer_within_range_loads() -> None:
    loaded = parse_registry(
        VALID.replace("context_window: 1047576", f"context_window: {2**63 - 1}")
    )
    assert loaded.registry.models["large"].context_window == 2**63 - 1


def test_an_integer_past_what_python_reads_is_out_of_range() -> None:
    error = one_error(VALID.replace("k: 3", f"k: {'9' * 5000}"))
    assert (error.line, error.field) == (16, "intent.k"), error
    assert error.message == "out of range: an integer of 5,000 digits"


@pytest.mark.parametrize(
    ("tag", "shown", "kind"),
    [
        ("!!float", "''", "a number"),
        ("!!int", "''", "an integer"),
        ("!!int '-'", "'-'", "an integer"),
        ("!!float _", "'_'", "a number"),
    ],
)
def test_a_number_tag_on_no_number_is_refused_at_its_field(tag: str, shown: str, kind: str) -> None:
    """``threshold: !!float`` (a tag on an empty value) made PyYAML index an empty text:
    an IndexError escaped the loader (found by fuzz_registry.py --extended)."""
    error = one_error(VALID.replace("threshold: 0.4", f"threshold: {tag}"))
    assert (error.line, error.field) == (17, "intent.threshold"), error
    assert error.message == f"the tag {tag.split()[0]} does not fit {shown}: not {kind}", error


@pytest.mark.parametrize(
    ("line", "old", "new", "field", "char"),
    [
        (
            20,
            "description: programming help",
            'description: "\\ud800"',
            "routes[0].description",
            "\\ud800",
        ),
        (
            20,
            "description: programming help",
            'description: "\\ud83d\\ude00!"',
            "routes[0].description",
            "\\ud83d",
        ),
        (10, "model: gpt-4.1\n", 'model: "gpt\\udc00"\n', "models.large.model", "\\udc00"),
        (31, "X-Tenant: acme", 'X-Tenant: "a\\udfff"', "rules[0].when.header.X-Tenant", "\\udfff"),
        (7, "small: {provider", '"s\\ud800": {provider', "models['s\\ud800']", "\\ud800"),
    ],
)
def test_a_lone_surrogate_escape_is_refused_at_its_field(
    line: int, old: str, new: str, field: str, char: str
) -> None:
    """``"\\ud800"`` (a UTF-16 surrogate written as an escape, alone or as half of a
    pair, which YAML does not join) is no text: a description holding one loaded, and
    hashing the registry's version raised UnicodeEncodeError (a traceback); a model id's
    was pydantic's "unable to parse raw data as a unicode string". Found by
    fuzz_registry.py --extended (seed 1)."""
    error = one_error(VALID.replace(old, new))
    assert (error.line, error.field) == (line, field), error
    assert error.message.startswith(f"holds the escape '{char}'"), error
    assert "write the character itself" in error.message, error


HUGE = "9" * 5000  # past Python's 4,300 digits for int()


@pytest.mark.parametrize(
    ("line", "old", "field"),
    [
        (20, "description: programming help", "routes[0].description"),
        (10, "model: gpt-4.1", "models.large.model"),
        (31, "when: {header: {X-Tenant: acme}}", "rules[0].when.header.X-Tenant"),
    ],
)
def test_a_huge_unquoted_number_in_a_text_field_says_to_quote_it(
    line: int, old: str, field: str
) -> None:
    """A plain number of 4,300+ digits where text goes was "out of range": the user meant
    text, and YAML read it as an integer Python will not make."""
    new = old.replace("acme", HUGE) if "acme" in old else f"{old.split(':')[0]}: {HUGE}"
    error = one_error(VALID.replace(old, new))
    assert (error.line, error.field) == (line, field), error
    assert error.message == (
        "an unquoted number of 5,000 digits: YAML reads it as an integer, and this field "
        "is text; quote it"
    ), error


def test_a_huge_unquoted_number_where_a_word_goes_says_to_quote_it() -> None:
    """A field of a few words (``intent.method``, a provider's ``kind``, a safety action)
    is text too: it said 'out of range', as if a smaller number would do."""
    for old, new, field in [
        ("method: knn", f"method: {HUGE}", "intent.method"),
        (
            "{kind: openai, base_url: https",
            f"{{kind: {HUGE}, base_url: https",
            "providers.openai.kind",
        ),
    ]:
        error = one_error(VALID.replace(old, new))
        assert error.field == field, error
        assert error.message == (
            "an unquoted number of 5,000 digits: YAML reads it as an integer, and this field "
            "is text; quote it"
        ), error


def test_a_huge_number_keeps_out_of_range_where_a_number_goes_or_its_tag_says_so() -> None:
    for old, new, field in [
        ("context_window: 1047576", f"context_window: {HUGE}", "models.large.context_window"),
        ("price: {input: 2.0,", f"price: {{input: {HUGE},", "models.large.price.input"),
        ("description: programming help", f"description: !!int {HUGE}", "routes[0].description"),
    ]:
        error = one_error(VALID.replace(old, new))
        assert error.field == field, error
        assert error.message == "out of range: an integer of 5,000 digits", error


@pytest.mark.parametrize(
    ("old", "new", "field", "said"),
    [
        ("k: 3", "k: 0x" + "f" * 4000, "intent.k", "out of range: an integer of 4,817 digits"),
        (
            "threshold: 0.4",
            "threshold: 0b" + "1" * 20_000,
            "intent.threshold",
            "out of range: an integer of 6,021 digits",
        ),
        (
            "context_window: 1047576",
            "context_window: 1:" + ":".join(["59"] * 3000),
            "models.large.context_window",
            "out of range: an integer of 5,335 digits",
        ),
        (
            "context_window: 1047576",
            "params: {seed: 0x" + "f" * 4000 + "}",
            "models.large.params.seed",
            "out of range: an integer of 4,817 digits (quote it if it is text)",
        ),
        (
            "description: programming help",
            "description: 0x" + "f" * 4000,
            "routes[0].description",
            "an unquoted number of 4,817 digits: YAML reads it as an integer, and this field "
            "is text; quote it",
        ),
    ],
)
def test_an_integer_python_cannot_write_is_refused_at_its_field(
    old: str, new: str, field: str, said: str
) -> None:
    """Hex, binary and sexagesimal integers Python reads at any length, past the 4,300
    digits it writes: 'Exceeds the limit (4300 digits) for integer string conversion; use
    sys.set_int_max_str_digits()' at the enclosing model (``models.large``, ``intent``),
    and a ValueError out of the loader for a model's params (hashing the version). Found
    by fuzz_registry.py --extended."""
    error = one_error(VALID.replace(old, new))
    assert (error.field, error.message) == (field, said), error


def test_an_integer_python_writes_loads_up_to_its_last_digit() -> None:
    """The loader checks each integer against Python's 4,300 digits by its bits first (a
    power of ten per integer cost 0.9 ms of a 4 ms example load); the line is where it
    was: 4,300 digits load (a model's params take any value), 4,301 are refused."""
    old = "context_window: 1047576"
    for value in (10**4300 - 1, -(10**4300 - 1), 2 ** (3 * 4300), 2 ** (3 * 4300 + 1)):
        loaded = parse_registry(VALID.replace(old, f"params: {{seed: {hex(value)}}}"))
        assert loaded.registry.models["large"].params == {"seed": value}
    for value in (10**4300, -(10**4300), 2**14_500):
        error = one_error(VALID.replace(old, f"params: {{seed: {hex(value)}}}"))
        assert error.field == "models.large.params.seed", error
        assert error.message.startswith("out of range: an integer of 4,3"), error


def test_a_registry_given_as_data_says_an_integer_past_python_s_digits_out_of_range() -> None:
    """`Registry.model_validate` (data not read from YAML) counted an integer's digits
    with str(), which refuses past 4,300: Python's own message, at the model."""
    data = yaml.safe_load(VALID)
    data["models"]["large"]["context_window"] = 16**4000
    with pytest.raises(ValidationError) as info:
        Registry.model_validate(data)
    (error,) = info.value.errors()
    assert error["loc"] == ("models", "large")
    said = (("context_window",), "out of range: an integer of 4,817 digits")
    assert error["ctx"]["error"].problems == (said,), error


def test_a_huge_unquoted_number_as_a_key_says_to_quote_it() -> None:
    """(Written ``? key``: YAML's plain keys stop at 1,024 characters.)"""
    error = one_error(VALID.replace("models:\n", f"models:\n  ? {HUGE}\n  : {{provider: local}}\n"))
    assert (error.line, error.field) == (7, f"models.{HUGE[:MAX_NAME_CHARS]}…"), error
    assert error.message == "a key YAML reads as an integer of 5,000 digits: quote it", error


def test_a_huge_unquoted_number_in_a_cases_file_says_to_quote_it() -> None:
    """A prompt is text; a chat body's value may be text or a number (either is said)."""
    registry = parse_registry(VALID).registry
    for case, field, said in [
        (f"{{prompt: {HUGE}, expect: {{route: code}}}}", "cases[0].prompt", "this field is text"),
        (
            f"{{request: {{max_tokens: {HUGE}}}, expect: {{route: code}}}}",
            "cases[0].request.max_tokens",
            "out of range: an integer of 5,000 digits (quote it if it is text)",
        ),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_cases(f"cases:\n  - {case}\n", registry, source="c.yaml")
        assert (info.value.line, info.value.field) == (2, field), info.value
        assert said in info.value.message and HUGE not in str(info.value), info.value


@pytest.mark.parametrize("text", ["!!python/name:os.system ''\n", "--- !!set {a, b}\n"])
def test_a_tagged_document_is_refused_as_the_top_level(text: str) -> None:
    error = one_error(text)
    assert (error.line, error.field) == (1, None), error
    assert error.message.startswith("the top level must be a mapping of sections"), error
    assert "tag !!" in error.message


def test_a_tag_is_seen_after_a_byte_order_mark() -> None:
    """libyaml's marks do not count a UTF-8 BOM: the tag was looked for a character early,
    and ``!!binary`` loaded as text again."""
    error = one_error("\ufeff" + VALID.replace(DESCRIPTION, "    description: !!binary aGk="))
    assert (error.line, error.field) == (20, "routes[0].description"), error
    loaded = parse_registry("\ufeff" + VALID.replace(DESCRIPTION, "    description: !!str 12"))
    assert loaded.registry.routes[0].description == "12"


@pytest.mark.parametrize(
    "value",
    [
        "&d !!binary aGk=",
        "&d\n      !!binary aGk=",
        "&d # a comment\n      !!binary aGk=",  # loaded as the string 'hi'
        "&d # one\n      # two\n      !!binary aGk=",
    ],
    ids=["anchor", "anchor-line", "anchor-comment", "anchor-comments"],
)
def test_a_tag_after_an_anchor_and_comments_is_seen(value: str) -> None:
    """A tag is looked for where its node starts, past an anchor: a comment between the
    two hid it, and ``!!binary`` loaded as text."""
    error = one_error(VALID.replace(DESCRIPTION, f"    description: {value}"))
    assert (error.line, error.field) == (20, "routes[0].description"), error
    assert error.message.startswith("the tag !!binary"), error
