from __future__ import annotations

import importlib.util
import itertools
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmroute.errors import ConfigError
from llmroute.safety._pii_checks import iban_ok, luhn_ok, shannon_entropy
from llmroute.safety._pii_span import PiiSpan, _beats, resolve_overlaps
from llmroute.safety.pii import PII_TYPES, PiiDetector, Redactor

DETECTOR = PiiDetector()


def found(text: str, detector: PiiDetector = DETECTOR) -> list[tuple[str, str]]:
    return [(s.type, text[s.start : s.end]) for s in detector.find(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "mail bob.smith+tag@mail.example.co.uk now",
            [("EMAIL", "bob.smith+tag@mail.example.co.uk")],
        ),
        ("write to <ann@example.org>.", [("EMAIL", "ann@example.org")]),
        ("call (415) 555-2671 today", [("PHONE", "(415) 555-2671")]),
        ("ring +44 20 7946 0958.", [("PHONE", "+44 20 7946 0958")]),
        ("in Paris: +33 1 42 68 53 00", [("PHONE", "+33 1 42 68 53 00")]),
        ("phone (+49 30 901820)", [("PHONE", "+49 30 901820")]),
        ("card 4111 1111 1111 1111 ok", [("CARD", "4111 1111 1111 1111")]),
        ("amex 3782-822463-10005", [("CARD", "3782-822463-10005")]),
        (
            "mc 5555555555554444, jcb 3530111333300000",
            [("CARD", "5555555555554444"), ("CARD", "3530111333300000")],
        ),
        ("iban GB82 WEST 1234 5698 7654 32 thanks", [("IBAN", "GB82 WEST 1234 5698 7654 32")]),
        ("to DE89370400440532013000.", [("IBAN", "DE89370400440532013000")]),
        ("my SSN is 123-45-6789", [("US_SSN", "123-45-6789")]),
        ("ssn: 123456789", [("US_SSN", "123456789")]),
        ("id 123 45 6789 here", [("US_SSN", "123 45 6789")]),
        ("from 192.168.0.1.", [("IP_ADDRESS", "192.168.0.1")]),
        ("add a firewall rule for 10.0.0.1", [("IP_ADDRESS", "10.0.0.1")]),
        ("host 2001:db8::8a2e:370:7334 down", [("IP_ADDRESS", "2001:db8::8a2e:370:7334")]),
        ("loopback ::1 and fe80::1", [("IP_ADDRESS", "::1"), ("IP_ADDRESS", "fe80::1")]),
        # Release words nearby, but a host word, a place preposition or a port says host.
        ("after the upgrade the host 10.2.3.4 is down", [("IP_ADDRESS", "10.2.3.4")]),
        ("install nginx on 10.2.3.4", [("IP_ADDRESS", "10.2.3.4")]),
        ("bumped the agent, it talks to 10.2.3.4:8443", [("IP_ADDRESS", "10.2.3.4")]),
        ("updated the allowlist: 10.2.3.0/24", [("IP_ADDRESS", "10.2.3.0")]),
        ("we upgraded. Now 10.2.3.4 answers", [("IP_ADDRESS", "10.2.3.4")]),
        ("update the config: server_ip = 10.2.3.4", [("IP_ADDRESS", "10.2.3.4")]),
        ("after the upgrade set DB_HOST=10.2.3.4", [("IP_ADDRESS", "10.2.3.4")]),
        ("upgraded, so call 01.42.68.53.00", [("PHONE", "01.42.68.53.00")]),
        (
            "reach <10.2.3.4> or\n> 10.2.3.5",
            [("IP_ADDRESS", "10.2.3.4"), ("IP_ADDRESS", "10.2.3.5")],
        ),
    ],
)
def test_finds_each_pattern_type(text: str, expected: list[tuple[str, str]]) -> None:
    assert found(text) == expected


SECRETS = [
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_" + "a1B2" * 9,
    "github_pat_" + "A1b2C3d4E5f6G7h8I9j0K1" + "_" + "x" * 59,
    "sk-" + "Ab3" * 16,
    "sk-proj-" + "Zy9_-" * 20,
    "sk-ant-api03-" + "Qw8-" * 24 + "AA",
    "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
]


@pytest.mark.parametrize("secret", SECRETS)
def test_finds_secret_formats(secret: str) -> None:
    text = f"here is the key {secret} - do not share"
    assert found(text) == [("SECRET", secret)]


def test_pem_block_and_assignment_value_only() -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAbc+/=\n-----END RSA PRIVATE KEY-----"
    assert found(f"key:\n{pem}\nthanks") == [("SECRET", pem)]
    assert found("DB_PASSWORD='Xk9$mP2qLw8vNz4R' and more") == [("SECRET", "Xk9$mP2qLw8vNz4R")]
    assert found('{"api_key": "aZ3kq9Lm2Px7Wv4Rt8Yb"}') == [("SECRET", "aZ3kq9Lm2Px7Wv4Rt8Yb")]
    sha = "3f2a9c1e7b4d8a6f0e5c2b9d1a7f3e8c4b6d2a0f"
    assert found(f"token = {sha}") == [("SECRET", sha)]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 failed Luhn",
        "order 4000123412341235 is late",  # Luhn fails
        "iban GB83 WEST 1234 5698 7654 32 has a bad checksum",
        "iban GB82 WEST 1234 5698 7654 3 is one digit short",
        "SSN 000-12-3456, 666-12-3456, 912-12-3456, 123-00-4567, 123-45-0000",
        "upgrade to 1.2.3.4.5 or v1.2.3.4 or version 10.0.0.1",
        "see RFC 791 section 10.4.10.10, § 2.1.3.4 and clause 17.20.10.18",
        "the office is at lat 63.8600505, lon -35.5216135",
        "upgrade from 1.2.3.4 to 1.2.3.5; we pinned numpy 1.12.4.10 and scipy 17.16.17.16.16",
        "pip install pkg==1.2.3.4, pkg>=4.3.2.1, rolled back the agent to 0.0.0.20",
        'npm pins "left-pad": "^1.2.3.4" and "~4.3.2.1"',
        "octets 256.1.1.1 and 1.2.3",
        "meeting on 2024-03-15 at 12:30:45, 15.03.2024, 03/15/2024",
        "it costs $1,299.99 or €49,90 for 4096 tokens",
        "order #0161033962 shipped, invoice INV-A-069005929",
        "ISBN 978-3-16-148410-0 and ISBN 0-306-40615-2",
        "request id 123e4567-e89b-12d3-a456-426614174000",
        "commit 3f2a9c1e7b4d8a6f0e5c2b9d1a7f3e8c4b6d2a0f, commit 4265223",
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "tracking 1Z999AA10123456784",
        "password=xxxxxxxxxxxxxxxx and api_key: your_api_key_here_now",
        "the password reset link, the api_key field is required, sk-learn",
        "std::vector and a::b::c and 10:30 MAC 00:1A:2B:3C:4D:5E",
        "no pii here at all, just words",
        "",
    ],
)
def test_tricky_negatives(text: str) -> None:
    assert found(text) == []


def test_overlaps_keep_priority_then_length() -> None:
    a = PiiSpan("PHONE", 0, 10, 0.8)
    b = PiiSpan("SECRET", 5, 12, 0.99)
    c = PiiSpan("IBAN", 20, 42, 1.0)
    d = PiiSpan("CARD", 25, 41, 1.0)  # inside the IBAN: the container wins
    e = PiiSpan("EMAIL", 50, 60, 0.95)
    f = PiiSpan("EMAIL", 52, 65, 0.95)  # same type: the longer one
    assert resolve_overlaps([a, b, c, d, e, f]) == [b, c, f]
    text = "SSN 123-45-6789 at bob.123-45-6789@example.com"
    assert [s.type for s in DETECTOR.find(text)] == ["US_SSN", "EMAIL"]


def _overlaps_by_the_rule(spans: list[PiiSpan]) -> list[PiiSpan]:
    """The overlap rule stated directly: each candidate (by start, longer first) is
    compared with every span kept so far."""
    kept: list[PiiSpan] = []
    for span in sorted(set(spans), key=lambda s: (s.start, -s.end)):
        clash = [k for k in kept if k.start < span.end and span.start < k.end]
        if all(_beats(span, k) for k in clash):
            kept = [k for k in kept if k not in clash]
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)


_SPANS = st.lists(
    st.builds(
        lambda kind, start, length, score: PiiSpan(kind, start, start + length, score),
        st.sampled_from(PII_TYPES),
        st.integers(0, 60),
        st.integers(1, 15),
        st.sampled_from([0.5, 0.9, 1.0]),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(_SPANS)
def test_the_linear_sweep_keeps_what_the_rule_keeps(spans: list[PiiSpan]) -> None:
    assert resolve_overlaps(spans) == _overlaps_by_the_rule(spans)


def test_overlaps_scale_with_the_number_of_candidates() -> None:
    """A text with thousands of values (a pasted log) must not cost the square of
    their number: 4x the candidates takes well under 16x the time (ratio in one run).
    Timed in this thread's CPU time: in wall time, on a loaded machine, the small case
    ran within one time slice and the large one shared the CPU (a ratio of 12 to 17)."""

    def spans(n: int) -> list[PiiSpan]:
        return [PiiSpan("PHONE" if i % 2 else "EMAIL", 7 * i, 7 * i + 9, 0.9) for i in range(n)]

    def seconds(n: int) -> float:
        candidates = spans(n)
        started = time.thread_time()
        kept = resolve_overlaps(candidates)
        elapsed = time.thread_time() - started
        assert len(kept) == (n + 1) // 2  # every other one overlaps its neighbours
        return elapsed

    small = min(seconds(3_000) for _ in range(3))
    large = min(seconds(12_000) for _ in range(3))
    assert large / small < 8


def test_spans_are_sorted_and_disjoint() -> None:
    text = "a@b.io 4111111111111111 10.0.0.1 +44 20 7946 0958 AKIAIOSFODNN7EXAMPLE"
    spans = DETECTOR.find(text)
    assert [s.type for s in spans] == ["EMAIL", "CARD", "IP_ADDRESS", "PHONE", "SECRET"]
    assert all(x.end <= y.start for x, y in itertools.pairwise(spans))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"entities": "EMAIL"}, "entities"), ({"phone_regions": "US"}, "phone_regions")],
)
def test_a_string_for_a_list_is_named_as_one(kwargs: dict[str, Any], field: str) -> None:
    """A string is a collection of its letters: ``entities="EMAIL"`` was refused as the
    unknown types ['A', 'E', 'I', 'L', 'M']."""
    with pytest.raises(ConfigError, match="must be a list of names") as caught:
        PiiDetector(**kwargs)
    assert caught.value.field == field
    assert repr(next(iter(kwargs.values()))) in str(caught.value)


def test_entity_selection_and_errors() -> None:
    only_email = PiiDetector(["EMAIL"])
    assert found("a@b.io 4111111111111111", only_email) == [("EMAIL", "a@b.io")]
    assert PiiDetector().entities == tuple(t for t in PII_TYPES if t not in ("PERSON", "LOCATION"))
    with pytest.raises(ConfigError, match=r"unknown PII entity.*EMAIL, PHONE"):
        PiiDetector(["EMAIL", "CREDIT"])
    with pytest.raises(ConfigError, match="ner_model"):
        PiiDetector(["PERSON"])
    with pytest.raises(ConfigError, match="phone region"):
        PiiDetector(phone_regions=("XX",))
    with pytest.raises(ConfigError) as caught:
        PiiDetector(phone_leniency="strict")  # type: ignore[arg-type]
    assert caught.value.field == "phone_leniency"  # the argument's name, not `leniency`
    assert "'possible', 'valid'" in caught.value.message and "'strict'" in caught.value.message


def test_person_without_a_model_is_said_at_the_registrys_line(tmp_path: Path) -> None:
    """It said `<file>: ner_model: ...`, with no line and a field path of its own."""
    from llmroute.decide import Router
    from llmroute.registry import load_registry

    path = tmp_path / "registry.yaml"
    path.write_text(
        "encoder: builtin:static\n"
        "providers: {p: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}}\n"
        "models: {a: {provider: p, model: a}}\n"
        "routes:\n  - {name: r, examples: [x], target: a}\n"
        "default: {target: a}\n"
        "safety:\n  injection: {enabled: false}\n  pii: {entities: [PERSON]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        Router(load_registry(path))
    assert str(caught.value).startswith(f"{path}:9: safety.pii.ner_model: PERSON detection")


def test_bare_nine_digits_are_no_ssn_without_a_keyword() -> None:
    assert found("a bare 123456789 without a keyword", PiiDetector(["US_SSN"])) == []


def test_phone_regions_decide_national_formats() -> None:
    text = "ruf an: 030 901820"
    assert found(text, PiiDetector(phone_regions=("US",))) == []
    assert found(text, PiiDetector(phone_regions=("DE",))) == [("PHONE", "030 901820")]


def test_redactor_numbers_values_per_request() -> None:
    redactor = Redactor()
    first = "mail a@b.io, then A@B.io again, or c@d.org"
    second = "card 4111 1111 1111 1111 and a@b.io; card 4111-1111-1111-1111"
    out1 = redactor.redact(first, DETECTOR.find(first))
    out2 = redactor.redact(second, DETECTOR.find(second))
    assert out1 == "mail <EMAIL_1>, then <EMAIL_1> again, or <EMAIL_2>"
    assert out2 == "card <CARD_1> and <EMAIL_1>; card <CARD_1>"
    assert redactor.counts == {"EMAIL": 2, "CARD": 1}
    assert Redactor().redact("x", []) == "x"


def _luhn_complete(body: str) -> str:
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


@settings(max_examples=60, deadline=None)
@given(
    prefix=st.sampled_from(["4", "51", "55", "2221", "2720", "6011", "65", "3530"]),
    rest=st.text("0123456789", min_size=15, max_size=15),
    sep=st.sampled_from(["", " ", "-"]),
)
def test_any_luhn_valid_card_in_a_sentence_is_found(prefix: str, rest: str, sep: str) -> None:
    number = _luhn_complete((prefix + rest)[:15])
    shown = sep.join(number[i : i + 4] for i in range(0, 16, 4))
    text = f"Please charge {shown} for the renewal."
    assert found(text) == [("CARD", shown)]


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(codec="utf-8"), max_size=200))
def test_find_never_crashes_and_spans_are_in_bounds(text: str) -> None:
    for span in DETECTOR.find(text):
        assert 0 <= span.start < span.end <= len(text)


def test_checks() -> None:
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST1234569876543")
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert shannon_entropy("aaaa") == 0.0 and shannon_entropy("abcd") == 2.0


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


needs_presidio = pytest.mark.skipif(
    not (_have("spacy") and _have("presidio_analyzer")),
    reason="PERSON/LOCATION need the optional extra: pip install 'llmroute[pii]'",
)


@needs_presidio
def test_missing_spacy_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"cannot be loaded.*never downloads"):
        PiiDetector(ner_model="no_such_spacy_model_xyz")


@needs_presidio
def test_person_and_location_through_presidio(tmp_path: Path) -> None:
    """A blank spaCy pipeline with an entity ruler, saved to a directory: exercises the
    Presidio path offline, without any trained model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import spacy

        nlp = spacy.blank("en")
        ruler = nlp.add_pipe("entity_ruler")
        ruler.add_patterns(  # type: ignore[attr-defined]
            [
                {"label": "PERSON", "pattern": "Alice Smith"},
                {"label": "GPE", "pattern": "Berlin"},
            ]
        )
        nlp.to_disk(tmp_path / "model")
        detector = PiiDetector(ner_model=str(tmp_path / "model"))
        text = "Alice Smith moved to Berlin, mail alice@example.com"
        assert found(text, detector) == [
            ("PERSON", "Alice Smith"),
            ("LOCATION", "Berlin"),
            ("EMAIL", "alice@example.com"),
        ]


@needs_presidio
def test_person_with_an_installed_trained_model() -> None:
    if not _have("en_core_web_sm"):
        pytest.skip(
            "no trained spaCy model installed (en_core_web_sm); install it from the "
            "official spacy-models release to run this test"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        detector = PiiDetector(["PERSON"], ner_model="en_core_web_sm")
        assert ("PERSON", "Barack Obama") in found("Barack Obama was born in Hawaii.", detector)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Chinese, Japanese and Korean write no space before or after a number: the
        # glued-to-a-word rules (INV-A-069005929 is no phone) dropped every one of these
        ("電話番号は090-1234-5678です", [("PHONE", "090-1234-5678")]),
        ("请拨打13812345678联系我", [("PHONE", "13812345678")]),
        ("전화 010-1234-5678로 주세요", [("PHONE", "010-1234-5678")]),
        ("カード番号4111 1111 1111 1111で払います", [("CARD", "4111 1111 1111 1111")]),
        ("请发邮件到bob@example.com谢谢", [("EMAIL", "bob@example.com")]),
        ("联系张伟@example.com", [("EMAIL", "联系张伟@example.com")]),  # all its letters
        ("服务器192.168.10.4宕机了", [("IP_ADDRESS", "192.168.10.4")]),
        ("SSN是078-05-1120吗", [("US_SSN", "078-05-1120")]),
        ("密钥ghp_" + "a1B2" * 9 + "不要分享", [("SECRET", "ghp_" + "a1B2" * 9)]),
        # the digits of other scripts are the number they write: full-width (Japanese
        # and Chinese input methods), Arabic-Indic; Luhn read them as garbage codes
        (
            "カード４１１１ １１１１ １１１１ １１１１です",
            [("CARD", "４１１１ １１１１ １１１１ １１１１")],
        ),
        ("بطاقتي ٤١١١ ١١١١ ١١١١ ١١١١", [("CARD", "٤١١١ ١١١١ ١١١١ ١١١١")]),
        ("電話番号は０９０－１２３４－５６７８です", [("PHONE", "０９０－１２３４－５６７８")]),
        # grouped by no-break, narrow no-break or ideographic spaces, or full-width dashes
        (
            "carte 4111\u00a01111\u00a01111\u00a01111",
            [("CARD", "4111\u00a01111\u00a01111\u00a01111")],
        ),
        (
            "carte 4111\u202f1111\u202f1111\u202f1111",
            [("CARD", "4111\u202f1111\u202f1111\u202f1111")],
        ),
        (
            "カード 4111\u30001111\u30001111\u30001111",
            [("CARD", "4111\u30001111\u30001111\u30001111")],
        ),
        ("card 4111－1111－1111－1111", [("CARD", "4111－1111－1111－1111")]),
    ],
)
def test_numbers_in_text_of_other_scripts_are_found(
    text: str, expected: list[tuple[str, str]]
) -> None:
    assert found(text, PiiDetector(phone_regions=["JP", "CN", "KR", "US"])) == expected


@pytest.mark.parametrize(
    "text",
    [
        "番号 ４１１１ １１１１ １１１１ １１１２",  # fails Luhn, read in ASCII digits
        "my id is ９１２-３４-５６７８",  # area 9xx: never issued, as in ASCII digits
        "ref ١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦",  # no card network's prefix
        "ID12345678901 and abc4111111111111111",  # glued to Latin letters: still no PII
    ],
)
def test_digits_of_other_scripts_get_the_checks_ascii_ones_do(text: str) -> None:
    assert found(text) == []
