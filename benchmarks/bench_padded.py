"""Short English text padded with Chinese, Russian or Arabic prose, through the safety
layer: are the injections blocked, are the benign fragments left alone?

    .venv/bin/python benchmarks/bench_padded.py [--encoders builtin:minilm-int8 ...]

Data: benchmarks/data/padded_english.jsonl, written by hand for this check (nothing is
tuned on it): 12 English injections of fewer than 32 letters (`READ_ENOUGH`, so a window
mostly in another script holding one is not scored whole) and 12 benign English
fragments of the kind a document or request in another language names (a product, a
heading, "Please answer in English."). Each is put at the start, middle and end of a
400-character document of benchmarks/data/scripts_prose.jsonl's Chinese, Russian and
Arabic prose, and also sent alone. Registry: examples/registry.yaml with the encoder
swapped (its profile blocks injections; ``unread_scripts: allow``). Per encoder and
padding: injections blocked (by a rule / by the classifier) and benign ones blocked, of
36 (12 alone), and how many requests the classifier scored.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml
from _common import ROOT, log

from llmroute.decide import Router

DATA = ROOT / "benchmarks" / "data" / "padded_english.jsonl"
PROSE = ROOT / "benchmarks" / "data" / "scripts_prose.jsonl"
REGISTRY = ROOT / "examples" / "registry.yaml"
ENCODERS = ("builtin:minilm-int8", "builtin:static")
PAD_CHARS = 400


def _pad(prose: str) -> str:
    out = prose
    while len(out) < PAD_CHARS:
        out += " " + prose
    return out[:PAD_CHARS]


def _texts(fragment: str, pad: str | None) -> list[str]:
    if pad is None:
        return [fragment]
    half = len(pad) // 2
    return [f"{fragment} {pad}", f"{pad[:half]} {fragment} {pad[half:]}", f"{pad} {fragment}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS))
    args = parser.parse_args()
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line]
    prose = {
        r["lang"]: r["text"]
        for r in map(json.loads, PROSE.read_text(encoding="utf-8").splitlines())
    }
    pads: dict[str, str | None] = {"alone": None, **{k: _pad(prose[k]) for k in ("zh", "ru", "ar")}}
    print(
        "encoder              padding  injections: rule / classifier / n   "
        "benign: blocked / n, worst / threshold   scored"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for encoder in args.encoders:
            log(f"{encoder} ...")
            data = yaml.safe_load(REGISTRY.read_text(encoding="utf-8"))
            data["encoder"] = encoder
            path = Path(tmp) / "registry.yaml"
            path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
            router = Router.from_yaml(path)
            for name, pad in pads.items():
                rule = model = n_inj = benign = n_benign = scored = 0
                worst = threshold = 0.0
                for row in rows:
                    for text in _texts(row["text"], pad):
                        decision = router.decide(text)
                        safety = decision.safety
                        assert safety is not None
                        detail = next(g.detail for g in decision.signals if g.layer == "safety")
                        threshold = float(detail.get("threshold", threshold))
                        scored += safety.injection_score is not None
                        blocked = safety.action == "block"
                        if row["label"] == "injection":
                            n_inj += 1
                            rule += blocked and any(f.startswith("rule:") for f in safety.fired)
                            model += blocked and "injection" in safety.fired
                        else:
                            n_benign += 1
                            benign += blocked
                            worst = max(worst, safety.injection_score or 0.0)
                print(
                    f"{encoder:20} {name:7}  {rule:4} / {model:10} / {n_inj:2}"
                    f"              {benign:7} / {n_benign:2}, {worst:.3f} / "
                    f"{threshold:.3f}   {scored:6}"
                )


if __name__ == "__main__":
    sys.exit(main())
