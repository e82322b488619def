"""The phone finder's work budget: libphonenumber reads a text only up to its BUDGET-th
digit-run candidate; later candidates are judged by the cheap context rules alone."""

from __future__ import annotations

from llmroute.safety._pii_phone import BUDGET, CHEAP_SCORE, PhoneFinder
from llmroute.safety.pii import PhoneBudget, PiiDetector, PiiSpan
from llmroute.telemetry.recorder import redact_text

NAMES = ("Ann Lee", "Bob Stone", "Chloé Martin", "Dev Patel", "Eve Adams", "Femi Okoro")


def phone(i: int) -> str:
    """The i-th number of a contact list, in one of the shapes people write."""
    n = f"{i % 10_000:04d}"
    return (
        f"(212) 555-{n}",
        f"+44 20 7946 {n}",
        f"212.555.{n}",
        f"+1-415-555-{n}x12",
        f"020 7946 {n}",
    )[i % 5]


def contact_list(n: int, sep: str = "\n") -> tuple[str, list[str]]:
    numbers = [phone(i) for i in range(n)]
    return sep.join(f"{NAMES[i % len(NAMES)]}, {p}" for i, p in enumerate(numbers)), numbers


def find(finder: PhoneFinder, text: str) -> list[PiiSpan]:
    """The finder's spans in order of position (it lists them region by region)."""
    return sorted(finder.find(text), key=lambda s: s.start)


def test_every_number_past_the_budget_is_found_by_the_cheap_rule() -> None:
    k = 37
    text, numbers = contact_list(BUDGET + k)
    spans = find(PhoneFinder(("US", "GB")), text)
    assert [text[s.start : s.end] for s in spans] == numbers  # each one, whole
    assert [s.score for s in spans[:BUDGET]] == [0.8] * BUDGET  # libphonenumber's
    assert [s.score for s in spans[BUDGET:]] == [CHEAP_SCORE] * k


def test_at_the_budget_libphonenumber_reads_every_candidate() -> None:
    text, numbers = contact_list(BUDGET)
    spans = find(PhoneFinder(("US", "GB")), text)
    assert [text[s.start : s.end] for s in spans] == numbers
    assert {s.score for s in spans} == {0.8}
    text, numbers = contact_list(BUDGET + 1)
    spans = find(PhoneFinder(("US", "GB")), text)
    assert [s.score for s in spans] == [0.8] * BUDGET + [CHEAP_SCORE]


def test_the_parses_stop_growing_at_the_budget(parses: list[int]) -> None:
    finder = PhoneFinder(("US", "GB", "DE", "FR"))
    text, _ = contact_list(BUDGET)
    finder.find(text)
    at_budget = parses[0]
    assert at_budget >= BUDGET  # the matcher did run, once per number at least
    parses[0] = 0
    text, numbers = contact_list(6 * BUDGET)
    spans = finder.find(text)
    assert parses[0] == at_budget
    assert len(spans) == len(numbers)
    parses[0] = 0
    dense = "1234567890 " * 3000  # 33 kB of digit groups: one run of 3,000 candidates
    spans = finder.find(dense)
    assert parses[0] == 0  # the run is past the budget as a whole: none of it is read
    assert len(spans) == 3000
    assert all(dense[s.start : s.end] == "1234567890" for s in spans)


def test_past_the_budget_the_context_rules_still_reject_what_is_no_phone() -> None:
    padding, _ = contact_list(BUDGET)
    negatives = [
        "due 2025-03-14 or 14/03/2025",
        "numpy 1.26.4.12 and 63.8600505 kg",
        "order #0161033962, invoice 4402918475, INV-A-069005929",
        "ISBN 978-3-16-148410-0",
        "a card that fails Luhn: 4111 1111 1111 1112",
        "12345",
    ]
    tail = "\n".join(negatives)
    text = f"{padding}\n{tail}\nlast: +44 20 7946 0958 and 212-555-0173"
    spans = find(PhoneFinder(("US", "GB")), text)
    past = [(text[s.start : s.end], s.score) for s in spans if s.start > len(padding)]
    assert past == [("+44 20 7946 0958", CHEAP_SCORE), ("212-555-0173", CHEAP_SCORE)]


def test_below_the_budget_the_spans_are_what_the_matcher_gives() -> None:
    # the same texts and spans as before the budget existed (taken from the code then)
    detector = PiiDetector()
    cases = {
        "call (415) 555-2671 today, or +44 20 7946 0958 after 6": [
            ("PHONE", "(415) 555-2671", 0.8),
            ("PHONE", "+44 20 7946 0958", 0.8),
        ],
        "order 2025-03-14: ref 0161033962, call 020 7946 0018x44": [
            ("PHONE", "020 7946 0018x44", 0.8)
        ],
        "1234567890 " * 20: [("PHONE", "1234567890", 0.8)] * 20,
        "version 1.2.3.4, 63.8600505 kg, 212.555.0123": [("PHONE", "212.555.0123", 0.8)],
    }
    for text, expected in cases.items():
        got = [(s.type, text[s.start : s.end], s.score) for s in detector.find(text)]
        assert got == expected, text


def test_a_pasted_csv_of_phones_leaks_none_of_them_into_the_log() -> None:
    rows, numbers = contact_list(3 * BUDGET)
    csv = "name,phone\n" + rows.replace(", ", ",")
    redacted = redact_text(csv)
    assert redacted.count("<PHONE_") == len(numbers)
    assert not any(n in redacted for n in numbers)


def test_the_texts_of_one_request_share_the_budget() -> None:
    """With one `PhoneBudget`, texts are read as if they were one: the matcher stops at
    the request's 200th candidate, not at each text's (a request of a hundred messages
    cost a hundred budgets). Without one, each text has its own, as before."""
    texts = [contact_list(150)[0] for _ in range(3)]
    detector = PiiDetector(entities=["PHONE"])
    budget = PhoneBudget()
    scores = [[s.score for s in detector.find(text, budget)] for text in texts]
    assert scores == [
        [0.8] * 150,
        [0.8] * (BUDGET - 150) + [CHEAP_SCORE] * (300 - BUDGET),
        [CHEAP_SCORE] * 150,
    ]
    assert budget.left == 0
    assert [{s.score for s in detector.find(text)} for text in texts] == [{0.8}] * 3
