"""A tiny Hugging Face text classifier built offline in seconds: a WordPiece tokenizer trained with
``tokenizers`` on generated topic sentences, and a 2-layer BERT (hidden 64, 2 heads), both saved with
``save_pretrained`` as a user's directory would be. Nothing is downloaded."""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # bert_from_scratch: scripts' folder

TOPIC_WORDS = {
    "sport": [
        "football",
        "match",
        "goal",
        "team",
        "player",
        "coach",
        "league",
        "score",
        "win",
        "cup",
        "striker",
        "keeper",
    ],
    "business": [
        "market",
        "shares",
        "profit",
        "bank",
        "company",
        "stocks",
        "investor",
        "trade",
        "price",
        "economy",
        "deal",
        "firm",
    ],
    "tech": [
        "software",
        "computer",
        "phone",
        "internet",
        "chip",
        "code",
        "network",
        "data",
        "robot",
        "device",
        "app",
        "cloud",
    ],
    "weather": [
        "rain",
        "storm",
        "sunny",
        "cloud",
        "wind",
        "snow",
        "forecast",
        "temperature",
        "cold",
        "heat",
        "frost",
        "flood",
    ],
}
FILLER = [
    "the",
    "a",
    "of",
    "in",
    "on",
    "and",
    "today",
    "said",
    "new",
    "big",
    "small",
    "after",
    "before",
    "this",
    "that",
    "with",
]


def topic_texts(topic: str, n: int, seed: int = 0) -> list[str]:
    """``n`` short sentences of one topic: topic words among common filler, in random order."""
    rng = random.Random(f"{topic}-{seed}")
    texts = []
    for _ in range(n):
        words = rng.choices(TOPIC_WORDS[topic], k=rng.randint(3, 6)) + rng.choices(FILLER, k=rng.randint(2, 8))
        rng.shuffle(words)
        texts.append(" ".join(words).capitalize() + ".")
    return texts


def topic_task(topics, n_per_topic: int, seed: int = 0) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for topic in topics:
        texts += topic_texts(topic, n_per_topic, seed)
        labels += [topic] * n_per_topic
    return texts, labels


def save_tiny_text_classifier(directory: str | Path, labels=("sport", "business"), seed: int = 0) -> Path:
    """A randomly initialised tiny BERT sequence classifier with ``labels`` as its id2label, and its tokenizer."""
    from bert_from_scratch import untrained_bert_classifier

    directory = Path(directory)
    corpus = [text for topic in TOPIC_WORDS for text in topic_texts(topic, 50, seed=99)]
    model, fast = untrained_bert_classifier(
        corpus,
        labels,
        vocab_size=300,
        hidden_size=64,
        layers=2,
        heads=2,
        intermediate_size=128,
        max_positions=128,
        seed=seed,
    )
    model.save_pretrained(directory, safe_serialization=True)
    fast.save_pretrained(directory)
    return directory


def zipped_directory(directory: str | Path) -> bytes:
    """A save_pretrained directory as the .zip POST /models (source hf) takes."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(Path(directory).iterdir()):
            archive.write(path, f"export/{path.name}")
    return buffer.getvalue()
