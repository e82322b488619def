"""PII detector quality and latency on synthetic chat messages with known gold spans.

    .venv/bin/python benchmarks/bench_pii.py [--split dev|test] [--n 3000]
        [--phone-leniency valid|possible] [--json | --markdown]

Data: Faker (locales en_US, en_GB, de_DE, fr_FR, plus nl_NL/es_ES/it_IT IBANs) fills
sentence frames with 0-3 entities each, written in the shapes people type (cards and
IBANs grouped or compact, phones in national and +CC form, SSNs with dashes, spaces or
bare after "SSN"), and our own generators make format-correct random secrets (Faker has
none). Every message also carries 0-2 hard negatives: order ids, dates, times, prices,
version strings, ISBNs, UUIDs, hex hashes, tracking numbers, Luhn-failing card-like
numbers, token counts. Gold phones are Faker's numbers with the extension dropped, kept
only when `is_possible_number` holds under their locale (Faker also emits strings such as
``00008063608`` that no numbering plan allows).

Honest split: frames, entity phrases and negative phrases are split in two disjoint
halves. DEV (seed 1, even-indexed templates) was looked at and tuned on; TEST (seed 4,
odd-indexed templates) is scored once, at the end. The first test set (seed 2, before the
twelve negatives marked below existed) was scored on 2026-11-25 and its IP_ADDRESS false
positives (`section 10.4.10.10`) led to the numbering-word list in `_pii_patterns`; the
second (seed 3, scored 2026-12-02) flagged versions after release verbs (`upgrade from
...`, `we pinned numpy ...`), which led to the release-clause rule in `_pii_context`.
Seed 4 with the templates marked 2026-12-03 is the fresh set that replaced them
(docs/benchmarks.md says so).

Scores per type: precision, recall, F1 and support (gold count), by exact span match and
by overlap match (a prediction of the right type overlapping a gold span). Timing: p50/p99
of one `PiiDetector.find` per message, plus a 300-character message without PII.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import re
import string
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import phonenumbers
from _common import dump_json, log, machine, percentiles
from faker import Faker

from llmroute.safety._pii_checks import luhn_ok
from llmroute.safety.pii import PiiDetector, PiiSpan

TYPES = ("EMAIL", "PHONE", "CARD", "IBAN", "US_SSN", "IP_ADDRESS", "SECRET")
LOCALES = {"en_US": "US", "en_GB": "GB", "de_DE": "DE", "fr_FR": "FR"}
IBAN_LOCALES = ("en_GB", "de_DE", "fr_FR", "nl_NL", "es_ES", "it_IT")
SEEDS = {"dev": 1, "test": 4}
CLEAN_300 = (
    "Hi there, I am trying to write a function that merges two sorted lists in Python. "
    "It should run in linear time and handle empty lists gracefully. Can you also explain "
    "the complexity, and show a few unit tests using pytest? Please keep it short and "
    "readable, thanks a lot for the help with this!"
)

# Sentence frames; {E} marks an entity slot, {N} a hard-negative slot.
FRAMES = (
    "Hi, {E} Thanks!",
    "Can you help me draft a reply? {E} {N}",
    "{N} Also, {E}",
    "Quick question about my account. {E} {E}",
    "Please summarise this note: {E} {N} {E}",
    "Translate to French: {E}",
    "{E} {N}",
    "Here is the log line I keep seeing: {E} {N}",
    "Could you check this for me? {N} {E} {E}",
    "Write a polite email saying {E}",
    "Urgent: {E} {E} {E}",
    "Fix the typo in: {E} {N}",
    "My notes say {N} and {E}",
    "From the ticket: {E} {N} {N}",
    "{N} {N} {E}",
    "I pasted the config below. {E} {N}",
    "Rewrite this more formally: {E}",
    "The customer wrote: '{E}' {N}",
    "Summary of the call: {E} {E} {N}",
    "Context: {N}. Question: {E}",
    "hey {E} thx",
    "In the spreadsheet row: {E}; {N}; {E}",
    "Reminder for tomorrow - {E} {N}",
    "Debugging output: {E}",
    "{N}",
    "Nothing sensitive here, just {N} and {N}.",
    "What does this mean? {N}",
    "Can you explain {N} to me?",
)

# Phrases per type; {v} is the value.
PHRASES: dict[str, tuple[str, ...]] = {
    "EMAIL": (
        "my email is {v}.",
        "reach me at {v}",
        "cc {v} on the thread.",
        "Email: {v}",
        "send it to <{v}> please",
        "the login was {v}, right?",
        "contact ({v}) for details",
        "write to {v}!",
    ),
    "PHONE": (
        "call me on {v}.",
        "my number is {v}",
        "Tel: {v}",
        "you can text {v} after 5pm",
        "phone ({v})",
        "ring {v}, ask for Sam.",
        "mobile: {v}; office closed",
        "the hotline {v} did not answer",
    ),
    "CARD": (
        "my card number is {v}.",
        "charge {v} for the renewal",
        "card: {v} exp 04/27",
        "I paid with {v} yesterday",
        "Visa/MC {v}",
        "refund to card {v}, please.",
        "the number on the card is {v}",
        "PAN={v}",
    ),
    "IBAN": (
        "my IBAN is {v}.",
        "wire it to {v}",
        "IBAN: {v}",
        "bank account {v} (savings)",
        "pay into {v} by Friday",
        "the beneficiary account is {v}.",
        "transfer to IBAN {v}, reference rent",
        "account no. {v}",
    ),
    "US_SSN": (
        "my SSN is {v}.",
        "social security number {v}",
        "SSN: {v}",
        "her social security no. {v} was on the form",
        "ssn {v}",
        "SSN#{v}",
        "Social Security Number: {v}.",
        "the SSN {v} belongs to the tenant",
    ),
    "IP_ADDRESS": (
        "the server is at {v}.",
        "connection refused from {v}",
        "IP: {v}",
        "ssh admin@{v} fails",
        "whitelist {v} please",
        "client_ip={v} status=403",
        "ping {v} times out",
        "the request came from {v}, then stopped",
        # Added 2026-12-03 (dev, test alternate): hosts near release words.
        "update the firewall to allow {v}",
        "after the upgrade the host {v} is unreachable",
        "install nginx on {v}",
        "we pinned the resolver at {v}",
    ),
    "SECRET": (
        "here is my key {v}",
        "Authorization: Bearer {v}",
        "{v}",
        "I accidentally committed {v} yesterday",
        "the token {v} stopped working",
        "export VALUE={v}",
        "use {v} for the staging env",
        "key = '{v}'",
    ),
}
# Assignments: the whole text is the phrase, the gold span is only {v}.
ASSIGNMENTS = (
    "password={v}",
    'api_key: "{v}"',
    "export SECRET_KEY={v}",
    "DB_PASSWORD='{v}'",
    "token = {v}",
    '{{"client_secret": "{v}"}}',
    "auth_token: {v}",
    "passwd={v}",
)
NEGATIVES = (
    "order #{order} shipped",
    "meeting on {date} at {time}",
    "it costs {price}",
    "upgrade to version {version}",
    "ISBN {isbn}",
    "request id {uuid}",
    "commit {sha}",
    "tracking number {tracking}",
    "ref {badcard}",
    "the context window is {count} tokens",
    "invoice INV-{order} dated {date}",
    "sha256 {sha256}",
    "build {version} failed at {time}",
    "account ref {order}",
    "order {longnum} is delayed",
    "password reset link expired at {time}",
    "the api_key field is required",
    "call ended at {time} on {date}",
    "total {price} for {count} items",
    "see RFC {count} section {version}",
    # Added 2026-12-02 with the fresh test set (seed 3), written before it was scored.
    "per clause {version} of the agreement",
    "as described in chapter {version}",
    "follow step {version} in the runbook",
    "paragraph {version} applies here",
    "the SNMP OID {oid} returns nothing",
    "the office is at {coords}",
    "see § {version} of the spec",
    "upgrade from {version} to {version}",
    "Figure {version} shows the latency",
    "walk {oid} with snmpwalk",
    "lat {lat}, lon {lon}",
    "we pinned numpy {version} and scipy {version}",
    # Added 2026-12-03 with the second fresh test set (seed 4), written before it was scored:
    # version numbers after release words, as in the seed-3 false positives (see the docs).
    "bumped requests to {version} last week",
    "downgraded the driver to {version} and rebooted",
    "pip install somepkg=={version}",
    "installed openssl {version} from source",
    "rolled back the agent to {version} after the crash",
    "released {version} yesterday, changelog attached",
    "after the update to {version} nothing works",
    "requirements: django>={version}",
)


def _half(items: Sequence[str], split: str) -> list[str]:
    return [s for i, s in enumerate(items) if i % 2 == (0 if split == "dev" else 1)]


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "-_"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def gen_secret(rng: random.Random) -> str:
    """One random, format-correct credential."""
    kind = rng.randrange(11)
    if kind == 0:
        return rng.choice(("AKIA", "ASIA")) + _rand(rng, string.ascii_uppercase + "234567", 16)
    if kind == 1:
        return "gh" + rng.choice("pousr") + "_" + _rand(rng, ALNUM, 36)
    if kind == 2:
        return "github_pat_" + _rand(rng, ALNUM, 22) + "_" + _rand(rng, ALNUM, 59)
    if kind == 3:
        return "sk-" + _rand(rng, ALNUM, 48)
    if kind == 4:
        return "sk-proj-" + _rand(rng, B64URL, rng.randint(60, 156)) + _rand(rng, ALNUM, 2)
    if kind == 5:
        return "sk-ant-api03-" + _rand(rng, B64URL, 93) + "AA"
    if kind == 6:
        head = "xox" + rng.choice("abprs") + "-" + _rand(rng, string.digits, 12)
        return head + "-" + _rand(rng, string.digits, 13) + "-" + _rand(rng, ALNUM, 24)
    if kind == 7:
        prefix = rng.choice(("sk_live_", "rk_live_", "pk_live_"))
        return prefix + _rand(rng, ALNUM, rng.choice((24, 99)))
    if kind == 8:
        return "AIza" + _rand(rng, B64URL[:-2] + "_-", 35)
    if kind == 9:
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {"sub": str(rng.randint(1, 10**9)), "iat": rng.randint(10**9, 2 * 10**9)}
        payload = _b64url(json.dumps(claims).encode())
        return f"{header}.{payload}.{_b64url(rng.randbytes(32))}"
    label = rng.choice(("RSA ", "EC ", "OPENSSH ", ""))
    body = base64.b64encode(rng.randbytes(rng.choice((96, 192)))).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {label}PRIVATE KEY-----\n{lines}\n-----END {label}PRIVATE KEY-----"


def gen_password(rng: random.Random) -> str:
    alphabet = ALNUM + "!@#$%^&*+/"
    while True:
        value = _rand(rng, alphabet, rng.randint(16, 40))
        if value[-1] not in ".)]}>":
            return value


def _jcb(rng: random.Random) -> str:
    """Faker's JCB numbers take any 35xx prefix; JCB's own IIN range is 3528-3589."""
    body = str(rng.randint(3528, 3589)) + _rand(rng, string.digits, 11)
    for check in string.digits:
        if luhn_ok(body + check):
            return body + check
    raise AssertionError("unreachable: one check digit always passes")


def _group(value: str, sizes: Sequence[int], sep: str) -> str:
    out, pos = [], 0
    for size in sizes:
        out.append(value[pos : pos + size])
        pos += size
    return sep.join(part for part in out if part)


class Generator:
    """Entity values and hard negatives for one split (seeded)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.fakers = {}
        for i, loc in enumerate(sorted({*LOCALES, *IBAN_LOCALES})):
            fake = Faker(loc)
            fake.seed_instance(seed * 100 + i)
            self.fakers[loc] = fake

    def value(self, kind: str) -> str:
        return getattr(self, "_" + kind.lower())()

    def _email(self) -> str:
        fake = self.fakers[self.rng.choice(list(LOCALES))]
        return self.rng.choice((fake.email, fake.free_email, fake.company_email))()

    def _phone(self) -> str:
        while True:
            loc = self.rng.choice(list(LOCALES))
            raw = re.sub(r"\s*x\d+$", "", self.fakers[loc].phone_number())
            try:
                num = phonenumbers.parse(raw, LOCALES[loc])
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_possible_number(num):
                return raw

    def _card(self) -> str:
        fake = self.fakers["en_US"]
        kind = self.rng.choice(("visa16", "visa13", "mastercard", "amex", "discover", "jcb"))
        digits = _jcb(self.rng) if kind == "jcb" else fake.credit_card_number(card_type=kind)
        style = self.rng.random()
        if style < 0.4:
            return digits
        sizes = (4, 6, 5) if len(digits) == 15 else (4, 4, 4, 4, 3)
        return _group(digits, sizes, " " if style < 0.8 else "-")

    def _iban(self) -> str:
        compact = self.fakers[self.rng.choice(IBAN_LOCALES)].iban()
        return compact if self.rng.random() < 0.5 else _group(compact, [4] * 9, " ")

    def _us_ssn(self) -> str:
        ssn = self.fakers["en_US"].ssn()
        style = self.rng.random()
        return ssn if style < 0.6 else ssn.replace("-", " " if style < 0.8 else "")

    def _ip_address(self) -> str:
        fake = self.fakers["en_US"]
        style = self.rng.random()
        if style < 0.4:
            return fake.ipv4_public()
        if style < 0.7:
            return fake.ipv4_private()
        v6 = fake.ipv6()
        return v6 if style < 0.85 else str(__import__("ipaddress").IPv6Address(v6))

    def _secret(self) -> str:
        return gen_secret(self.rng)

    def negative(self, template: str) -> str:
        rng, fake = self.rng, self.fakers["en_US"]
        digits = string.digits
        bad = fake.credit_card_number(card_type="visa16")
        bad = bad[:-1] + str((int(bad[-1]) + rng.randint(1, 9)) % 10)
        fields: dict[str, Callable[[], str]] = {
            "order": lambda: rng.choice(("", "A-", "SO")) + _rand(rng, digits, rng.randint(6, 10)),
            "date": lambda: fake.date(rng.choice(("%Y-%m-%d", "%d.%m.%Y", "%m/%d/%Y"))),
            "time": lambda: fake.time(rng.choice(("%H:%M", "%H:%M:%S"))),
            "price": lambda: rng.choice(("$", "€", "£")) + f"{rng.uniform(1, 99999):,.2f}",
            "version": lambda: ".".join(str(rng.randint(0, 20)) for _ in range(rng.randint(3, 5))),
            "isbn": lambda: fake.isbn13() if rng.random() < 0.5 else fake.isbn10(),
            "uuid": lambda: fake.uuid4(),
            "sha": lambda: fake.sha1()[: rng.choice((7, 12, 40))],
            "sha256": fake.sha256,
            "tracking": lambda: rng.choice(
                ("1Z" + _rand(rng, string.ascii_uppercase + digits, 16), _rand(rng, digits, 22))
            ),
            "badcard": lambda: bad,
            "count": lambda: str(rng.choice((4096, 8192, 32000, 128000, 2616, 7231))),
            "longnum": lambda: _rand(rng, digits, rng.randint(11, 20)),
            "oid": lambda: (
                "1.3.6.1." + ".".join(str(rng.randint(1, 30)) for _ in range(rng.randint(2, 6)))
            ),
            "coords": lambda: f"{fake.latitude()}, {fake.longitude()}",
            "lat": lambda: str(fake.latitude()),
            "lon": lambda: str(fake.longitude()),
        }
        return re.sub(r"\{(\w+)\}", lambda m: fields[m.group(1)](), template)


@dataclass
class Message:
    text: str
    gold: list[PiiSpan]


def make_set(split: str, n: int) -> list[Message]:
    gen = Generator(SEEDS[split])
    frames = _half(FRAMES, split)
    phrases = {k: _half(v, split) for k, v in PHRASES.items()}
    assignments, negatives = _half(ASSIGNMENTS, split), _half(NEGATIVES, split)
    out = []
    for _ in range(n):
        frame = gen.rng.choice(frames)
        text, gold = "", []
        for piece in re.split(r"(\{[EN]\})", frame):
            if piece == "{N}":
                text += gen.negative(gen.rng.choice(negatives))
            elif piece == "{E}":
                kind = gen.rng.choice(TYPES)
                if kind == "SECRET" and gen.rng.random() < 0.3:
                    value, phrase = gen_password(gen.rng), gen.rng.choice(assignments)
                else:
                    value, phrase = gen.value(kind), gen.rng.choice(phrases[kind])
                head, tail = phrase.replace("{{", "{").replace("}}", "}").split("{v}")
                start = len(text) + len(head)
                gold.append(PiiSpan(kind, start, start + len(value), 1.0))
                text += head + value + tail
            else:
                text += piece
        out.append(Message(text, gold))
    return out


def score(messages: Sequence[Message], preds: Sequence[list[PiiSpan]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for kind in TYPES:
        row: dict[str, Any] = {"support": 0}
        for mode in ("exact", "overlap"):
            tp_p = tp_g = n_pred = n_gold = 0
            for msg, pred in zip(messages, preds, strict=True):
                g = [s for s in msg.gold if s.type == kind]
                p = [s for s in pred if s.type == kind]
                n_pred, n_gold = n_pred + len(p), n_gold + len(g)
                hit = _same if mode == "exact" else _overlap
                tp_p += sum(any(hit(a, b) for b in g) for a in p)
                tp_g += sum(any(hit(a, b) for a in p) for b in g)
            prec = tp_p / n_pred if n_pred else 1.0
            rec = tp_g / n_gold if n_gold else 1.0
            f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
            row[mode] = {"precision": prec, "recall": rec, "f1": f1, "predicted": n_pred}
            row["support"] = n_gold
        table[kind] = row
    return table


def _same(a: PiiSpan, b: PiiSpan) -> bool:
    return (a.start, a.end) == (b.start, b.end)


def _overlap(a: PiiSpan, b: PiiSpan) -> bool:
    return a.start < b.end and b.start < a.end


def run(split: str, n: int, leniency: str) -> dict[str, Any]:
    messages = make_set(split, n)
    detector = PiiDetector(phone_regions=tuple(LOCALES.values()), phone_leniency=leniency)  # type: ignore[arg-type]
    for msg in messages[:200]:
        detector.find(msg.text)
    preds, times = [], []
    for msg in messages:
        t0 = time.perf_counter_ns()
        preds.append(detector.find(msg.text))
        times.append((time.perf_counter_ns() - t0) / 1000.0)
    clean = []
    for _ in range(5000):
        t0 = time.perf_counter_ns()
        detector.find(CLEAN_300)
        clean.append((time.perf_counter_ns() - t0) / 1000.0)
    return {
        "split": split,
        "seed": SEEDS[split],
        "messages": n,
        "phone_leniency": leniency,
        "scores": score(messages, preds),
        "time_per_message": percentiles(times),
        "time_clean_300_chars": percentiles(clean),
        "errors": _errors(messages, preds),
    }


def _errors(messages: Sequence[Message], preds: Sequence[list[PiiSpan]]) -> list[str]:
    """Up to 40 mismatches, for looking at on DEV only."""
    out = []
    for msg, pred in zip(messages, preds, strict=True):
        gold = {(s.type, s.start, s.end) for s in msg.gold}
        got = {(s.type, s.start, s.end) for s in pred}
        if gold != got and len(out) < 40:
            miss = [f"{t}:{msg.text[a:b]!r}" for t, a, b in sorted(gold - got)]
            extra = [f"{t}:{msg.text[a:b]!r}" for t, a, b in sorted(got - gold)]
            out.append(f"{msg.text!r}\n    missed {miss}\n    extra  {extra}")
    return out


def table(result: dict[str, Any]) -> list[str]:
    out = [
        "| type | support | exact P | exact R | exact F1 | overlap P | overlap R | overlap F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, row in result["scores"].items():
        e, o = row["exact"], row["overlap"]
        cells = [f"{x * 100:.1f}%" for x in (e["precision"], e["recall"], e["f1"])]
        cells += [f"{x * 100:.1f}%" for x in (o["precision"], o["recall"], o["f1"])]
        out.append(f"| {kind} | {row['support']} | " + " | ".join(cells) + " |")
    t, c = result["time_per_message"], result["time_clean_300_chars"]
    out += [
        "",
        f"`find` per message (n={t['n']}): p50 {t['p50_us']:.1f} µs, p99 {t['p99_us']:.1f} µs; "
        f"300-character message without PII: p50 {c['p50_us']:.1f} µs, "
        f"p99 {c['p99_us']:.1f} µs.",
    ]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    parser.add_argument("--n", type=int, default=3000, help="messages in the set")
    parser.add_argument("--phone-leniency", choices=("valid", "possible"), default="possible")
    parser.add_argument("--errors", action="store_true", help="print mismatches (dev only)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--json", action="store_true", help="print one JSON document")
    mode.add_argument("--markdown", action="store_true", help="print the docs section")
    args = parser.parse_args(argv)
    if args.errors and args.split != "dev":
        parser.error("--errors is for the dev set: the test set is scored, not inspected")
    log(f"{args.split}: generating {args.n} messages and detecting ...")
    result = run(args.split, args.n, args.phone_leniency)
    if args.json:
        dump_json({"machine": machine()} | result)
        return 0
    if args.markdown:
        info = machine()
        print("## PII detection\n")
        print(
            f"Measured {info['date']} on {info['nproc']} CPUs (nproc), {info['cpu']}, "
            f"Python {info['python']}. Command: `.venv/bin/python {info['command']}`.\n"
        )
        print(
            f"{args.split.upper()} set: {args.n} synthetic messages (seed "
            f"{SEEDS[args.split]}, its own half of the templates), phone regions "
            f"{', '.join(LOCALES.values())}, phone leniency `{args.phone_leniency}`.\n"
        )
    for line in table(result):
        print(line)
    if args.errors:
        print("\n".join(result["errors"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
