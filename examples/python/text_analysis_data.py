"""text_analysis data: seeded generated documents and the stopword list.

Writes {"docs": [{"id", "text"}], "stopwords": [...]}; the C++ driver puts the
stopwords in a Store, where its native prepare stage reads them.
"""

from __future__ import annotations

import random

from example_common import generator_args, scaled, write_data

FULL_SIZE = 5000

POSITIVE = ["good", "great", "excellent", "happy", "love", "wonderful", "fast", "reliable",
            "clean", "bright", "friendly", "smooth"]
NEGATIVE = ["bad", "poor", "terrible", "sad", "hate", "awful", "slow", "broken", "dirty",
            "dark", "rude", "noisy"]
TOPICS = ["battery", "screen", "delivery", "price", "support", "camera", "keyboard", "speaker",
          "update", "design", "warranty", "charger", "software", "packaging", "manual",
          "display", "sensor", "network", "storage", "memory", "engine", "seat", "window",
          "garden", "kitchen", "coffee", "hotel", "room", "staff", "menu"]
STOPWORDS = ["the", "a", "an", "and", "or", "but", "of", "to", "in", "on", "is", "was", "it",
             "this", "that", "with", "for", "as", "at", "by", "very", "really", "i", "we"]


def document(rng: random.Random) -> str:
    """One review: a mood picks how often positive or negative words appear."""
    mood = rng.choice(["positive", "negative", "mixed"])
    weights = {"positive": (6, 1), "negative": (1, 6), "mixed": (3, 3)}[mood]
    words = []
    for _ in range(rng.randint(40, 160)):
        r = rng.random() * 20
        if r < weights[0]:
            words.append(rng.choice(POSITIVE))
        elif r < weights[0] + weights[1]:
            words.append(rng.choice(NEGATIVE))
        elif r < 14:
            words.append(rng.choice(STOPWORDS))
        else:
            words.append(rng.choice(TOPICS))
    text = []
    for i, w in enumerate(words):
        if i == 0 or text[-1].endswith("."):
            w = w.capitalize()
        if rng.random() < 0.08:
            w += rng.choice([".", ",", "!", "?"])
        text.append(w)
    return " ".join(text) + "."


def generate(scale: float, seed: int) -> dict:
    rng = random.Random(seed)
    docs = [{"id": i, "text": document(rng)} for i in range(scaled(FULL_SIZE, scale))]
    return {"docs": docs, "stopwords": STOPWORDS}


if __name__ == "__main__":
    args = generator_args(__doc__)
    write_data(args.out, generate(args.scale, args.seed))
