"""Tokenizing long texts: retain's ``HuggingFaceTextSource.encode``, which tokenizes a long text from its
head when the tokenizer allows it (``app.learning.text_source.head_of``), against the tokenizer called
on the whole texts (what ``encode`` did before), at several ``max_length``.

Texts: BBC News articles (``--data``; about 2,000 characters each), and long documents made of
``--join`` articles each. The tokenizer is benchmarks/text.py's kind, a lowercasing WordPiece trained
on the articles. Both sides must give the same ids (checked on every text); the figure is the
median of ``--repeats`` timings of tokenizing every text once, one thread.

    python benchmarks/tokenizing.py --data ../shared/data/bbc-news/bbc.csv
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from bert_from_scratch import wordpiece_tokenizer
from common import console, median_seconds, write_json
from text import RESULTS, read_bbc

from app.learning.text_source import PAD, HuggingFaceTextSource, tokenizer_files_in


def whole_text_ids(source: HuggingFaceTextSource, texts: list[str]) -> torch.Tensor:
    encoded = source.tokenizer(
        texts, truncation=True, max_length=source.max_length, padding="max_length", return_tensors="pt"
    )
    return encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, PAD)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="bbc.csv (columns text,label)")
    parser.add_argument("--max-lengths", default="64,256,512")
    parser.add_argument("--join", type=int, default=20, help="articles in one long document")
    parser.add_argument("--vocab", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "tokenizing.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    articles, _ = read_bbc(args.data)
    documents = [" ".join(articles[i : i + args.join]) for i in range(0, len(articles), args.join)]
    with tempfile.TemporaryDirectory() as folder:
        wordpiece_tokenizer(articles, args.vocab).save_pretrained(folder)
        files = tokenizer_files_in(Path(folder))
    config = {"model_type": "bert", "max_position_embeddings": 512, "vocab_size": args.vocab}
    runs = []
    for name, texts in (("articles", articles), ("documents", documents)):
        for max_length in (int(n) for n in args.max_lengths.split(",")):
            source = HuggingFaceTextSource(config, files, {"max_length": max_length})
            if not torch.equal(source.encode(texts), whole_text_ids(source, texts)):
                raise SystemExit(f"{name} at max_length {max_length}: encode's ids differ from the whole texts'")
            encode = median_seconds(lambda: source.encode(texts), args.repeats)  # noqa: B023
            whole = median_seconds(lambda: whole_text_ids(source, texts), args.repeats)  # noqa: B023
            runs.append(
                {
                    "texts": name,
                    "count": len(texts),
                    "mean_characters": statistics.mean(map(len, texts)),
                    "max_length": max_length,
                    "encode_seconds": encode,
                    "whole_text_seconds": whole,
                    "speedup": whole / encode,
                }
            )
            console.print(
                f"{name:>9} ({len(texts)}) max_length {max_length:>3}: encode {encode * 1000:.0f} ms, "
                f"whole texts {whole * 1000:.0f} ms ({whole / encode:.1f}x)"
            )
    write_json(args.out, {"settings": {k: str(v) for k, v in vars(args).items()}, "runs": runs})


if __name__ == "__main__":
    main()
