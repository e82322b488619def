"""Write attack rows that hide a training injection inside a training technical excerpt.

    python benchmarks/embed_injections.py --out FILE [--n 160] [--seed 0]
        [--labels injection] [--sources SOURCE ...] [--side train]
        [--data-dir /work/shared/data]
        [--technical benchmarks/data/benign_technical.jsonl]

Why: trained with benign technical excerpts (``--benign-extra benign_technical.jsonl``),
the detector learns "code or API docs = benign" and misses injections that sit in code
(BIPIA_code). These rows show it the same context with an attack in it.

By default only training rows are read: the attacks are the rows with one of `--labels` on the
train side of jailbreak/train.jsonl + prompt_injection/train.jsonl as
`benchmarks/train_safety_artifacts.py` splits them (`split_sides`, seed 0; validation
and test sides are left alone), and the contexts are the ``train`` rows of the technical
file. Each row takes the excerpts in turn and a random attack, cuts a random run of the
excerpt's lines so that the row fits one safety window (the detector fits an attack on
its first window only), and puts the attack at a random line boundary in one of three
styles: its own paragraph, line comments (``# `` in a .py file, ``// `` elsewhere), or
the end of a line. Attacks too long to leave `MIN_CONTEXT` characters of context are
not used.

A row is ``{"text", "label", "group", "source", "category", "split"}`` (split: the side
read, ``train`` by default, the rows `train_safety_artifacts.py` takes): the
group is the attack's, so cross-validation keeps it in the attack's fold (no
out-of-fold leak of the attack text); the source is `SOURCE`; the category the style.
Feed the file to the recipe beside the benign ones (every ``--benign-extra`` row keeps
its label):

    python benchmarks/train_safety_artifacts.py --encoders static --out DIR \\
        --benign-extra benchmarks/data/latin_prose_long.jsonl \\
        benchmarks/data/benign_technical.jsonl FILE --benign-extra-weight 1 0.25 1

The same seed and inputs give the same file. ``--side validation`` takes the attacks
of the validation side and the ``validation`` excerpts instead: held-out rows to check a
candidate with, never to train on.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llmroute.safety.injection import WINDOW, SafetyData, read_safety_data, split_sides

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "synthetic/embedded-in-technical"
STYLES = ("paragraph", "comment", "inline")
SIDES = ("train", "validation")
MIN_CONTEXT = 200
MAX_CHARS = WINDOW[0] - 50
"""A row's most characters: one window of the safety layer, with room to spare."""


def side_attacks(
    data: SafetyData,
    labels: Iterable[str],
    side: str = "train",
    seed: int = 0,
    sources: Iterable[str] = (),
) -> SafetyData:
    """The rows of `data` with one of `labels` (and of `sources`, if any) on `side` of
    `split_sides`."""
    wanted, number, origin = frozenset(labels), SIDES.index(side), frozenset(sources)
    sides = split_sides(data, seed=seed)
    keep = [
        i
        for i, label in enumerate(data.labels)
        if label in wanted and sides[i] == number and (not origin or data.sources[i] in origin)
    ]
    return data.subset(np.asarray(keep, dtype=np.intp))


def side_excerpts(path: Path, side: str = "train") -> list[dict[str, Any]]:
    """The rows of a JSONL file with ``text``, ``split`` and ``file`` whose split is `side`."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [r for r in rows if r["split"] == side]


def render(attack: str, style: str, file: str) -> list[str]:
    """The attack's lines as they go into the excerpt in `style`."""
    lines = attack.strip().splitlines() or [""]
    if style == "comment":
        mark = "# " if file.endswith(".py") else "// "
        return [(mark + line).rstrip() for line in lines]
    return lines


def embed(context: str, attack: str, style: str, file: str, rng: random.Random) -> str:
    """`attack` in a random run of `context`'s lines, the whole at most `MAX_CHARS`."""
    lines = context.splitlines()
    inserted = render(attack, style, file)
    budget = MAX_CHARS - sum(len(line) + 1 for line in inserted) - 2
    start = rng.randrange(len(lines))
    run: list[str] = []
    used = 0
    for line in lines[start:]:
        if used + len(line) + 1 > budget:
            break
        run.append(line)
        used += len(line) + 1
    if not run:  # the first line alone is too long: cut it
        run = [lines[start][: max(budget - 1, 0)]]
    at = rng.randrange(len(run) + 1)
    if style == "inline" and run and len(inserted) == 1:
        at = max(at - 1, 0)
        run[at] = f"{run[at]} {inserted[0]}"
        return "\n".join(run)
    if style == "paragraph":
        inserted = ["", *inserted, ""]
    return "\n".join([*run[:at], *inserted, *run[at:]])


def generate(
    attacks: SafetyData,
    excerpts: Sequence[dict[str, Any]],
    n: int,
    seed: int = 0,
    split: str = "train",
) -> list[dict[str, Any]]:
    """`n` rows: the excerpts in turn, each with a random usable attack and style."""
    rng = random.Random(seed)
    usable = [
        i for i, text in enumerate(attacks.texts) if len(text.strip()) <= MAX_CHARS - MIN_CONTEXT
    ]
    if not usable or not excerpts:
        raise SystemExit("embed_injections: no usable attack or no train excerpt")
    out = []
    for k in range(n):
        excerpt = excerpts[k % len(excerpts)]
        pick = rng.choice(usable)
        style = rng.choice(STYLES)
        out.append(
            {
                "text": embed(
                    excerpt["text"], attacks.texts[pick], style, excerpt.get("file", ""), rng
                ),
                "label": attacks.labels[pick],
                "group": attacks.groups[pick],
                "source": SOURCE,
                "category": style,
                "split": split,
            }
        )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels", nargs="+", default=["injection"])
    parser.add_argument("--sources", nargs="+", default=[], help="only these (default: all)")
    parser.add_argument("--side", choices=SIDES, default="train")
    parser.add_argument("--data-dir", type=Path, default=Path("/work/shared/data"))
    parser.add_argument(
        "--technical", type=Path, default=ROOT / "benchmarks/data/benign_technical.jsonl"
    )
    args = parser.parse_args(argv)
    data = read_safety_data(
        args.data_dir / "jailbreak/train.jsonl", args.data_dir / "prompt_injection/train.jsonl"
    )
    attacks = side_attacks(data, args.labels, args.side, sources=args.sources)
    excerpts = side_excerpts(args.technical, args.side)
    rows = generate(attacks, excerpts, args.n, args.seed, split=args.side)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} rows -> {args.out}")


if __name__ == "__main__":
    main()
