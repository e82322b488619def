"""Build benchmarks/data/benign_technical.jsonl: benign technical excerpts (API docs,
source code) for `bench_benign_documents.py` and
`train_safety_artifacts.py --benign-extra`.

    python benchmarks/build_benign_technical.py [--out PATH]

Reads local files of a Debian machine with Node.js and Python 3.11 installed:

* ``nodejs-docs``: /usr/share/doc/nodejs/api/*.md (Node.js API documentation, MIT);
  two excerpts a file: its head and one at a random offset.
* ``python-stdlib``: /usr/lib/python3.11/*.py (the Python standard library, PSF-2.0);
  one excerpt a file: its head (module docstring, licence header) for about half the
  files, a random offset for the others.

Licence texts (/usr/share/common-licenses) were measured once, on 2026-12-07, from the
local files (docs/benchmarks.md) and are not in the corpus: the GPL family's texts
permit only verbatim copies of the whole document, and an excerpt is not one.

An excerpt is at most 1,700 characters (two windows of the safety layer's default
1,000 / 750), cut at line starts. Everything is drawn from a random generator seeded by
the file's path, so the output is the same on every run on the same files.

The split is fixed by the file, never by the excerpt: ``sha1(key) % 100`` < 60 train,
< 80 validation, else test, where the key is the path (``nodejs/api/fs.md``,
``python3.11/json/__init__.py``).
Every excerpt of a file is one ``group`` (cross-validation keeps it in one fold).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "data" / "benign_technical.jsonl"
SIZE = 1700
MIN_FILE = 2 * SIZE

SOURCES = (
    # source, glob, licence, excerpts a file, key prefix
    ("nodejs-docs", "/usr/share/doc/nodejs/api/*.md", "MIT (Node.js)", 2, "nodejs/api/"),
    ("python-stdlib", "/usr/lib/python3.11/*.py", "PSF-2.0 (Python 3.11)", 1, "python3.11/"),
)


def side(key: str) -> str:
    bucket = int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16) % 100
    return "train" if bucket < 60 else "validation" if bucket < 80 else "test"


def line_start(text: str, position: int) -> int:
    """The start of the line `position` is in (position itself at 0)."""
    return 0 if position <= 0 else text.rfind("\n", 0, position) + 1


def excerpt(text: str, start: int) -> tuple[int, str]:
    start = line_start(text, start)
    end = start + SIZE
    if end < len(text):
        cut = text.rfind("\n", start + SIZE // 2, end)
        end = cut if cut > 0 else end
    return start, text[start:end].strip("\n")


def offsets(text: str, count: int, rng: random.Random, head: bool) -> list[int]:
    out = [0] if head else []
    tries = 0
    while len(out) < count and tries < 50:
        tries += 1
        at = line_start(text, rng.randrange(SIZE, len(text) - SIZE))
        if all(abs(at - o) >= SIZE for o in out):
            out.append(at)
    return out


def build() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for source, pattern, licence, count, prefix in SOURCES:
        seen: set[str] = set()
        for path in sorted(glob.glob(pattern)):
            real = os.path.realpath(path)
            if real in seen or not os.path.isfile(real):
                continue
            seen.add(real)
            text = Path(real).read_text(encoding="utf-8", errors="replace")
            if len(text) < MIN_FILE:
                continue
            name = prefix + os.path.basename(real)
            key = name
            rng = random.Random(name)
            head = source != "python-stdlib" or rng.random() < 0.5
            for at in offsets(text, count, rng, head):
                start, body = excerpt(text, at)
                rows.append(
                    {
                        "text": body,
                        "source": source,
                        "licence": licence,
                        "split": side(key),
                        "label": "benign",
                        "group": f"benign-technical/{name}",
                        "file": name,
                        "offset": start,
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows = build()
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    counts: dict[tuple[object, object], int] = {}
    for r in rows:
        counts[(r["source"], r["split"])] = counts.get((r["source"], r["split"]), 0) + 1
    print(f"{len(rows)} excerpts, {args.out.stat().st_size} bytes -> {args.out}")
    for (source, split), n in sorted(counts.items(), key=str):
        print(f"  {source:14} {split:10} {n}")


if __name__ == "__main__":
    main()
