"""The Fisher of a text model: one batched pass through traced modules against one sample at a time.

Hugging Face forwards cannot be vmapped, so a text model's per-sample gradients used to come from a
loop: one forward and one backward pass per sample and class. ``app.learning.fisher`` now traces
its linear, embedding and layer-norm modules instead (every parameter of a BERT): one forward of a
chunk and one backward pass per class give every sample's squared gradient. Both are timed here on
the same BBC News articles, for every ``trainable`` mode on the text benchmark's BERT shape (2
layers of width 64, a 4,000-word vocabulary) and for ``all`` on BERT-base's shape (12 layers of
width 768), random weights (the cost depends on the shapes, not the values), one torch thread, the
first 64 tokens of each article, and the largest difference between the two relative to the
largest Fisher value.

    python benchmarks/text_fisher.py --data ../shared/data/bbc-news/bbc.csv
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from bert_from_scratch import untrained_bert_classifier
from common import console, timed, write_json
from text import read_bbc

from app.learning import ContinualLearner
from app.learning.fisher import diagonal_fisher

RESULTS = Path(__file__).resolve().parent / "results" / "text" / "fisher.json"
SHAPES = {
    "bert_2x64": {"hidden_size": 64, "layers": 2, "heads": 2, "intermediate_size": 256},
    "bert_12x768": {"hidden_size": 768, "layers": 12, "heads": 12, "intermediate_size": 3072},
}


def measure(directory: Path, texts: list[str], trainable: str, args) -> dict:
    learner = ContinualLearner.from_text_directory(directory, {"max_length": args.max_length, "trainable": trainable})
    x = learner.text_source.encode(texts)
    network = learner.network
    diagonal_fisher(network, x[:2])  # warm-up
    traced_s, traced = timed(lambda: diagonal_fisher(network, x, chunk_size=args.chunk_size))
    loop_s, loop = timed(lambda: diagonal_fisher(network, x, traced=False))
    scale = max(float(f.abs().max()) for f in loop.values())
    return {
        "trainable": trainable,
        "samples": len(texts),
        "classes": len(learner.labels),
        "trainable_parameters": sum(p.numel() for p in network.parameters() if p.requires_grad),
        "traced_seconds": traced_s,
        "loop_seconds": loop_s,
        "speedup": loop_s / traced_s,
        "max_difference_over_max_value": max(float((traced[k] - loop[k]).abs().max()) for k in loop) / scale,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="bbc.csv (columns text,label)")
    parser.add_argument("--samples", type=int, default=100, help="articles (the text benchmark's Fisher cap)")
    parser.add_argument("--base-samples", type=int, default=16, help="articles at BERT-base's shape")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=128, help="the service's default")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    texts, labels = read_bbc(args.data)
    topics = sorted(set(labels))
    rows = []
    for shape, size in SHAPES.items():
        modes = ["all", "lora", "last:1", "head"] if shape == "bert_2x64" else ["all"]
        n = args.samples if shape == "bert_2x64" else args.base_samples
        with tempfile.TemporaryDirectory(prefix="retain-text-fisher-") as folder:
            model, tokenizer = untrained_bert_classifier(
                texts[:500], topics, vocab_size=4000, max_positions=128, seed=0, **size
            )
            model.save_pretrained(folder, safe_serialization=True)
            tokenizer.save_pretrained(folder)
            for trainable in modes:
                row = {"shape": shape, **measure(Path(folder), texts[-n:], trainable, args)}
                rows.append(row)
                console.print(
                    f"{shape:>12} {trainable:>6}: traced {row['traced_seconds']:.2f} s, "
                    f"loop {row['loop_seconds']:.2f} s ({row['speedup']:.1f}x), "
                    f"difference {row['max_difference_over_max_value']:.1e} of the largest value"
                )
    write_json(args.out, {"benchmark": "text_fisher", "max_length": args.max_length, "fisher": rows})


if __name__ == "__main__":
    main()
