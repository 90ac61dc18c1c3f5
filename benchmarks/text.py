"""Class-incremental text classification on BBC News (Greene & Cunningham 2006: 2,225 articles, 5 topics).

A small BERT is built and pretrained here (its WordPiece tokenizer trained on the training split) on
two topics, saved with ``save_pretrained`` as a user's model would be, and loaded by the learner as a
text model (``ContinualLearner.from_text_directory``). The two topics are its base task; the other
three are then taught one task (one new topic) at a time, for each strategy and ``trainable`` mode
asked for. Joint training of the pretrained model on all five topics at once is the bound.

Reported per run: all-topic accuracy after every update (test split of every topic seen so far),
the accuracy matrix (task x update), seconds per update, consolidation bytes, and at the end the
latency of one short text at batch 1 through ``ContinualLearner.predict`` (the serving path's
forward: tokenize, pad, forward, softmax) against a plain ``transformers`` forward of the same model
in the same process (tokenize + forward).

    python benchmarks/text.py --data ../shared/data/bbc-news/bbc.csv

Until the import route (``POST /models``, source ``hf``) is merged the base task is recorded by one
short update on the base topics (``--base-epochs``), which the pretrained model already fits; the
Avalanche peer is not run here (avalanche-lib is not installed in this environment).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import console, write_json

from app.learning import ContinualLearner, EWCConfig, TaskData, TrainConfig
from app.learning.config import FisherConfig
from app.learning.state import to_safetensors_bytes

RESULTS = Path(__file__).resolve().parent / "results" / "text"


def read_bbc(path: Path) -> tuple[list[str], list[str]]:
    csv.field_size_limit(1 << 24)
    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    return [row["text"] for row in rows], [row["label"] for row in rows]


def split(texts, labels, seed: int, per_topic: int | None):
    """Per topic: 70% train, 10% validation, 20% test (seeded); at most ``per_topic`` articles a topic."""
    rng = np.random.default_rng(seed)
    parts = {"train": {}, "validation": {}, "test": {}}
    for topic in sorted(set(labels)):
        index = rng.permutation([i for i, label in enumerate(labels) if label == topic])[:per_topic]
        n_test, n_validation = int(0.2 * len(index)), int(0.1 * len(index))
        chosen = {"test": index[:n_test], "validation": index[n_test : n_test + n_validation]}
        chosen["train"] = index[n_test + n_validation :]
        for part, rows in chosen.items():
            parts[part][topic] = TaskData([texts[i] for i in rows], [topic] * len(rows))
    return parts


def joined(datasets: list[TaskData]) -> TaskData:
    return TaskData([x for d in datasets for x in d.x], [y for d in datasets for y in d.y])


def pretrain(directory: Path, parts, base_topics, args) -> None:
    """A small BERT and its WordPiece tokenizer (trained on every training text), pretrained on the base topics."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    corpus = [text for data in parts["train"].values() for text in data.x]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=args.vocab, special_tokens=special))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    torch.manual_seed(args.seed)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden,
        max_position_embeddings=max(args.max_length, 128),
        num_labels=len(base_topics),
        id2label=dict(enumerate(base_topics)),
        label2id={topic: i for i, topic in enumerate(base_topics)},
        pad_token_id=tokenizer.token_to_id("[PAD]"),
    )
    model = BertForSequenceClassification(config)
    data = joined([parts["train"][t] for t in base_topics])
    encoded = fast(list(data.x), truncation=True, max_length=args.max_length, padding=True, return_tensors="pt")
    y = torch.tensor([base_topics.index(label) for label in data.y])
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.pretrain_lr)
    model.train()
    generator = torch.Generator().manual_seed(args.seed)
    for _ in range(args.pretrain_epochs):
        for batch in torch.randperm(len(y), generator=generator).split(args.batch_size):
            out = model(
                input_ids=encoded["input_ids"][batch], attention_mask=encoded["attention_mask"][batch], labels=y[batch]
            )
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
    model.save_pretrained(directory, safe_serialization=True)
    fast.save_pretrained(directory)


def accuracy_on(learner: ContinualLearner, data: TaskData) -> float:
    return learner.evaluate(data).accuracy


def run(directory: Path, parts, base_topics, new_topics, strategy: str, trainable: str, args) -> dict:
    ewc = EWCConfig(fisher=FisherConfig(max_samples=args.fisher_samples))
    options = {"max_length": args.max_length, "trainable": trainable, "lora_rank": args.lora_rank}
    options["memory_size"] = args.memory_size
    learner = ContinualLearner.from_text_directory(directory, options, ewc=ewc, seed=args.seed)
    config = TrainConfig(
        optimizer="adam", lr=args.lr, epochs=args.epochs, min_steps=0, patience=0, batch_size=args.batch_size
    )
    tasks = {"base": base_topics, **{topic: [topic] for topic in new_topics}}
    validation, matrix, all_topic, seconds, consolidation = {}, [], [], [], []
    base_accuracy = None
    for index, (key, topics) in enumerate(tasks.items()):
        train = joined([parts["train"][t] for t in topics])
        validation[key] = joined([parts["validation"][t] for t in topics])
        task_config = config if index else TrainConfig(**{**config.as_dict(), "epochs": args.base_epochs})
        started = time.perf_counter()
        learner.learn_task(key, train, strategy=strategy, validation=dict(validation), train_config=task_config)
        seconds.append(time.perf_counter() - started)
        seen = [t for k in list(tasks)[: index + 1] for t in tasks[k]]
        row = {k: accuracy_on(learner, joined([parts["test"][t] for t in tasks[k]])) for k in list(tasks)[: index + 1]}
        matrix.append(row)
        all_topic.append(accuracy_on(learner, joined([parts["test"][t] for t in seen])))
        if base_accuracy is None:
            base_accuracy = row["base"]
        tensors, _ = learner.export_consolidation()
        consolidation.append(sum(t.numel() * t.element_size() for t in tensors.values()))
        console.print(
            f"{strategy:>10} {trainable:>6} after {key:>13}: all-topic {all_topic[-1]:.3f} ({seconds[-1]:.1f} s)"
        )
    return {
        "strategy": strategy,
        "trainable": trainable,
        "all_topic_accuracy": all_topic,
        "matrix": matrix,
        "seconds_per_update": seconds,
        "consolidation_bytes": consolidation,
        "base_kept": matrix[-1]["base"] / base_accuracy if base_accuracy else None,
        "learner": learner,
    }


def joint(directory: Path, parts, topics, args) -> dict:
    """The bound: the pretrained model fine-tuned on all five topics at once."""
    learner = ContinualLearner.from_text_directory(directory, {"max_length": args.max_length}, seed=args.seed)
    config = TrainConfig(
        optimizer="adam", lr=args.lr, epochs=args.epochs, min_steps=0, patience=0, batch_size=args.batch_size
    )
    started = time.perf_counter()
    learner.learn_task("all", joined([parts["train"][t] for t in topics]), strategy="finetune", train_config=config)
    return {
        "all_topic_accuracy": accuracy_on(learner, joined([parts["test"][t] for t in topics])),
        "seconds": time.perf_counter() - started,
    }


def latency(learner: ContinualLearner, text: str, repeats: int) -> dict:
    """p50 of one text at batch 1: the learner's predict against a plain transformers forward (same model)."""
    network, tokenizer = learner.network.model, learner.text_source.tokenizer
    network.eval()

    def plain():
        with torch.inference_mode():
            encoded = tokenizer([text], truncation=True, max_length=learner.text_source.max_length, return_tensors="pt")
            return network(**encoded).logits

    def served():
        with torch.inference_mode():
            return learner.predict([text])

    timings = {}
    for name, call in (("transformers", plain), ("retain", served)):
        for _ in range(10):
            call()
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            samples.append(time.perf_counter() - started)
        timings[name] = statistics.median(samples)
    return {"p50_seconds": timings, "ratio": timings["retain"] / timings["transformers"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="bbc.csv (columns text,label)")
    parser.add_argument("--base-topics", default="business,sports")
    parser.add_argument("--strategies", default="finetune,ewc,replay,ewc_replay")
    parser.add_argument("--trainable", default="all,lora")
    parser.add_argument("--per-topic", type=int, default=None, help="at most this many articles a topic")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--base-epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--memory-size", type=int, default=200)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--fisher-samples", type=int, default=200)
    parser.add_argument("--latency-repeats", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "bbc.json")
    args = parser.parse_args()

    texts, labels = read_bbc(args.data)
    parts = split(texts, labels, args.seed, args.per_topic)
    base_topics = args.base_topics.split(",")
    new_topics = [topic for topic in sorted(set(labels)) if topic not in base_topics]
    runs = []
    with tempfile.TemporaryDirectory(prefix="retain-bbc-bert-") as folder:
        directory = Path(folder)
        started = time.perf_counter()
        pretrain(directory, parts, base_topics, args)
        pretrain_seconds = time.perf_counter() - started
        console.print(f"pretrained on {base_topics} in {pretrain_seconds:.0f} s")
        bound = joint(directory, parts, base_topics + new_topics, args)
        console.print(f"joint: {bound['all_topic_accuracy']:.3f}")
        measured_latency, weights_bytes = None, None
        for trainable in args.trainable.split(","):
            for strategy in args.strategies.split(","):
                result = run(directory, parts, base_topics, new_topics, strategy, trainable, args)
                learner = result.pop("learner")
                if measured_latency is None:
                    measured_latency = latency(
                        learner, "Shares in the bank rose after its profits beat forecasts.", args.latency_repeats
                    )
                    weights_bytes = len(to_safetensors_bytes(*learner.export_weights()))
                runs.append(result)
                payload = {  # written after every run: a long benchmark leaves what it measured
                    "data": str(args.data),
                    "base_topics": base_topics,
                    "new_topics": new_topics,
                    "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "pretrain_seconds": pretrain_seconds,
                    "joint": bound,
                    "runs": runs,
                    "predict_latency_batch1": measured_latency,
                    "weights_bytes": weights_bytes,
                }
                write_json(args.out, payload)
    console.print(json.dumps({r["strategy"] + "/" + r["trainable"]: r["all_topic_accuracy"][-1] for r in runs}))


if __name__ == "__main__":
    main()
