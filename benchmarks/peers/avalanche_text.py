"""Avalanche's peer of benchmarks/text.py: the same small BERT taught BBC topics one at a time by Avalanche.

The data split and the pretrained model are benchmarks/text.py's own (its ``read_bbc``, ``split``
and ``pretrain``, same seed and defaults): a small BERT and its WordPiece tokenizer, pretrained on
two BBC topics and saved with ``save_pretrained``. Avalanche loads that directory, tokenizes as
retain does (truncated at ``--max-length``, each batch cut to its longest text), and runs Naive, EWC
(each λ of ``--ewc-lambdas``) and Replay (``mem_size`` = ``--memory-size``) with retain's text
update settings (Adam, ``--lr``, ``--epochs``, ``--batch-size``): experience 0 is the two base
topics (``--base-epochs``, default 0: importances and buffer only, as retain's import records its
base task; see avalanche_common.py), then each other topic, the head an IncrementalClassifier grown
from 2 outputs to 5.

Reported per run, as benchmarks/text.py reports retain's: all-topic test accuracy after every update,
the accuracy matrix, base topics kept, seconds per update (``strategy.train`` of the experience, its
after-experience work included); and the all-topic validation accuracy at the end, by which
Avalanche's best strategy is chosen (its mean over seeds). Every run repeats once per seed of
``--train-seeds`` (text.py's: batch order, replay draws, dropout; default three), and the summary
gives the means. ``--retain`` strategies (default ewc_replay) are run by
benchmarks/text.py's own ``run`` (trainable all) in the same process on the same pretrained model,
so the seconds compare under the same machine load.

    bash benchmarks/peers/setup.sh avalanche
    nice -n 5 benchmarks/peers/.venvs/avalanche/bin/python benchmarks/peers/avalanche_text.py \\
        --data ../shared/data/bbc-news/bbc.csv
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: text, common
from avalanche_common import (
    STRATEGIES,
    accuracy,
    add_replay_batch_argument,
    classification_dataset,
    incremental_head,
    machine,
    strategy,
    stream,
    timed_train,
)
from common import console
from text import RESULTS, add_setup_arguments, ewc_lambda_value, pretrained_model, read_bbc, split, summary
from text import run as retain_run


class BertClassifier(nn.Module):
    """BertForSequenceClassification's forward (pooled output, dropout, classifier) over padded token
    ids, the classifier an IncrementalClassifier; each batch cut to its longest text, as retain's."""

    def __init__(self, model: nn.Module, pad_token_id: int) -> None:
        super().__init__()
        self.bert, self.dropout = model.bert, model.dropout
        self.classifier = incremental_head(model.classifier)
        self.pad_token_id = pad_token_id

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids != self.pad_token_id
        length = max(int(mask.sum(1).max()), 1)
        pooled = self.bert(input_ids=ids[:, :length], attention_mask=mask[:, :length].long()).pooler_output
        return self.classifier(self.dropout(pooled))


def encode(tokenizer, texts, max_length: int) -> torch.Tensor:
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, padding="max_length")
    return torch.tensor(encoded["input_ids"])


def run(directory: Path, name: str, ewc_lambda: float | None, parts, topics: list[str], args, seed: int) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)  # Avalanche's batch order, replay draws and dropout come from torch's generator
    tokenizer = AutoTokenizer.from_pretrained(directory)
    pretrained = AutoModelForSequenceClassification.from_pretrained(directory, use_safetensors=True)
    model = BertClassifier(pretrained, tokenizer.pad_token_id)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    n_base = len(args.base_topics.split(","))
    label = {topic: i for i, topic in enumerate(topics)}

    def data(part: str, chosen: list[str]):
        texts = [x for t in chosen for x in parts[part][t].x]
        return encode(tokenizer, texts, args.max_length), [label[y] for t in chosen for y in parts[part][t].y]

    train, test = data("train", topics), data("test", topics)
    sizes = [n_base] + [1] * (len(topics) - n_base)
    experiences = list(stream(classification_dataset(*train), classification_dataset(*test), sizes).train_stream)
    settings = argparse.Namespace(**{**vars(args), "ewc_lambda": ewc_lambda})
    learner = strategy(name, model, optimizer, settings, epochs=args.base_epochs)
    tasks = {"base": topics[:n_base], **{t: [t] for t in topics[n_base:]}}
    matrix, all_topic, seconds = [], [], []
    at_import = accuracy(model, *data("test", topics[:n_base]))
    for index, (key, experience) in enumerate(zip(tasks, experiences, strict=True)):
        learner.train_epochs = args.epochs if index else args.base_epochs
        seconds.append(timed_train(learner, experience))
        seen = list(tasks)[: index + 1]
        matrix.append({k: accuracy(model, *data("test", tasks[k])) for k in seen})
        all_topic.append(accuracy(model, *data("test", [t for k in seen for t in tasks[k]])))
        console.print(
            f"avalanche {name:>7} λ={ewc_lambda} seed {seed} after {key:>13}: "
            f"all-topic {all_topic[-1]:.3f} ({seconds[-1]:.1f} s)"
        )
    return {
        "strategy": name,
        "ewc_lambda": ewc_lambda,
        "seed": seed,
        "base_at_import": at_import,
        "all_topic_accuracy": all_topic,
        "all_topic_validation_final": accuracy(model, *data("validation", topics)),
        "matrix": matrix,
        "seconds_per_update": seconds,
        "base_kept": matrix[-1]["base"] / at_import if at_import else None,
        "head_outputs": model.classifier.classifier.out_features,
    }


def avalanche_method(run: dict) -> str:
    """Avalanche's runs by strategy, and λ for EWC (one run a λ)."""
    lam = run["ewc_lambda"]
    return run["strategy"] + (f" λ={lam:g}" if lam is not None else "")


def summaries(results: dict) -> dict:
    """text.py's ``summary`` of each side's runs (means over seeds), and Avalanche's best strategy by
    its mean validation accuracy at the end."""
    avalanche = summary(results["runs"], avalanche_method)
    best = max(avalanche, key=lambda name: avalanche[name]["validation_final"]["mean"])
    retain = summary(results["retain_runs"], lambda r: r["strategy"])
    return {
        "summary": {
            **{f"avalanche {k}": v for k, v in avalanche.items()},
            **{f"retain {k}": v for k, v in retain.items()},
        },
        "avalanche_best": {"method": best, **avalanche[best]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setup_arguments(parser)  # benchmarks/text.py's: the same split, model and update settings
    # retain's own run, same process (benchmarks/text.py's run; its defaults)
    parser.add_argument("--retain", default="ewc_replay", help="retain strategies to run here too ('' for none)")
    parser.add_argument("--retain-ewc-lambda", type=ewc_lambda_value, default="1000", help="text.py's --ewc-lambda")
    # Avalanche's runs
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    add_replay_batch_argument(parser)
    parser.add_argument("--ewc-lambdas", default="1000", help="EWC's λ, one run each (comma-separated)")
    parser.add_argument(
        "--base-epochs", type=int, default=0, help="epochs on the base topics (0: recorded as retain's import does)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "bbc_avalanche.json")
    args = parser.parse_args()

    texts, labels = read_bbc(args.data)
    parts = split(texts, labels, args.seed, args.per_topic)
    base_topics = args.base_topics.split(",")
    topics = base_topics + [t for t in sorted(set(labels)) if t not in base_topics]
    results: dict = {
        "command": " ".join(sys.argv),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine(),
        "base_topics": base_topics,
        "new_topics": topics[len(base_topics) :],
        "runs": [],
        "retain_runs": [],
    }

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))

    with tempfile.TemporaryDirectory(prefix="retain-bbc-bert-") as folder:
        directory, results["pretrain_seconds"] = pretrained_model(Path(folder), parts, base_topics, args)
        plans = [
            (name, float(lam))
            for name in args.strategies.split(",")
            if name == "ewc"
            for lam in args.ewc_lambdas.split(",")
        ]
        plans = [(name, None) for name in args.strategies.split(",") if name != "ewc"] + plans
        retain_args = argparse.Namespace(**{**vars(args), "ewc_lambda": args.retain_ewc_lambda})
        retain_strategies = [s for s in args.retain.split(",") if s]
        for seed in args.train_seeds:
            for index, (name, ewc_lambda) in enumerate(plans):
                entry = run(directory, name, ewc_lambda, parts, topics, args, seed)
                entry["loadavg_after"] = os.getloadavg()
                results["runs"].append(entry)
                save()
                if index == max(0, len(plans) // 2 - 1):  # retain amid Avalanche's runs, under the same load
                    for strategy_name in retain_strategies:
                        entry = retain_run(
                            directory,
                            parts,
                            base_topics,
                            topics[len(base_topics) :],
                            strategy_name,
                            "all",
                            retain_args,
                            seed,
                        )
                        entry["loadavg_after"] = os.getloadavg()
                        console.print(f"retain {strategy_name} seed {seed}: all-topic {entry['all_topic_accuracy']}")
                        results["retain_runs"].append(entry)
                        save()
    results.update(summaries(results))
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    save()


if __name__ == "__main__":
    main()
