"""A small labelled intent set that FakeEncoder separates well: 6 intents × 15 rows plus
out-of-scope rows drawn from unrelated words."""

from __future__ import annotations

import json
import random
from pathlib import Path

from llmroute.evaluate.data import LabelledRow

INTENTS = {
    "weather": ["weather", "rain", "forecast", "sunny", "temperature", "snow", "windy"],
    "music": ["song", "play", "playlist", "album", "music", "artist", "volume"],
    "banking": ["balance", "account", "transfer", "bank", "deposit", "savings", "money"],
    "travel": ["flight", "hotel", "booking", "trip", "airport", "luggage", "passport"],
    "cooking": ["recipe", "bake", "oven", "dinner", "ingredients", "boil", "cook"],
    "fitness": ["workout", "gym", "run", "exercise", "calories", "muscle", "yoga"],
}
OFF_TOPIC = [
    "philosophy", "volcano", "poetry", "chess", "dinosaur", "galaxy", "origami", "tax",
    "medieval", "castle", "quantum", "knitting", "pirates", "election", "mushroom", "opera",
]  # fmt: skip
OPENERS = ["please", "can you", "i want to", "help me", "tell me about", "quick question"]


def synthetic_rows(per_intent: int = 15, n_oos: int = 30, seed: int = 0) -> list[LabelledRow]:
    rng = random.Random(seed)
    rows = []
    for intent, words in INTENTS.items():
        for _ in range(per_intent):
            picked = rng.sample(words, 3)
            rows.append(LabelledRow(f"{rng.choice(OPENERS)} {' '.join(picked)}", intent))
    for _ in range(n_oos):
        rows.append(
            LabelledRow(f"{rng.choice(OPENERS)} {' '.join(rng.sample(OFF_TOPIC, 3))}", "oos")
        )
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list[LabelledRow]) -> Path:
    lines = [json.dumps({"text": r.text, "intent": r.intent}) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
