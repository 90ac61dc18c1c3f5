"""One optimizer step, torch's default (a loop over the parameters, op by op) against its fused
kernel (one kernel for every parameter), for the optimizers an update trains with (Adam; SGD with
and without momentum) and the shapes it trains: the service's default vector MLP, the text
benchmark's BERT (2 layers of width 64, a 4,000-word vocabulary) and BERT-base's shape (12 layers of
width 768). It also checks that both give the same weights after a few steps of random gradients
(max relative difference), since ``app.learning.training.make_optimizer`` picks the fused one.

    python benchmarks/optimizer_step.py            # one torch thread, as the service runs
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from common import console, median_seconds, write_json
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results" / "optimizer_step.json"
OPTIMIZERS = {
    "adam": lambda params, fused: torch.optim.Adam(params, lr=1e-3, fused=fused),
    "sgd_momentum": lambda params, fused: torch.optim.SGD(params, lr=1e-3, momentum=0.9, fused=fused),
    "sgd": lambda params, fused: torch.optim.SGD(params, lr=1e-3, fused=fused),
}


def models() -> dict[str, nn.Module]:
    from transformers import BertConfig, BertForSequenceClassification

    def bert(**shape) -> nn.Module:
        return BertForSequenceClassification(BertConfig(num_labels=5, **shape))

    return {
        "mlp_784_256_256_10": nn.Sequential(
            nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
        ),
        "bert_2x64": bert(
            vocab_size=4000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256
        ),
        "bert_12x768": bert(),
    }


def step_ms(model: nn.Module, optimizer: str, fused: bool | None, repeats: int) -> float:
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    step = OPTIMIZERS[optimizer](params, fused).step
    for _ in range(3):
        step()
    return 1000 * median_seconds(step, repeats)


def max_relative_difference(model: nn.Module, optimizer: str, steps: int = 5) -> float:
    """Same start, same random gradients: how far apart the default and the fused steps end."""
    ends = []
    for fused in (None, True):
        copied = copy.deepcopy(model)
        params = list(copied.parameters())
        step = OPTIMIZERS[optimizer](params, fused).step
        generator = torch.Generator().manual_seed(0)
        for _ in range(steps):
            for p in params:
                p.grad = torch.randn(p.shape, generator=generator)
            step()
        ends.append([p.detach() for p in params])
    return max(float((a - b).abs().max() / a.abs().max().clamp_min(1e-12)) for a, b in zip(*ends, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name, model in models().items():
        repeats = 10 if name == "bert_12x768" else 200
        for optimizer in OPTIMIZERS:
            default, fused = (step_ms(model, optimizer, f, repeats) for f in (None, True))
            row = {
                "model": name,
                "parameters": sum(p.numel() for p in model.parameters()),
                "optimizer": optimizer,
                "default_ms": default,
                "fused_ms": fused,
                "speedup": default / fused,
                "max_relative_difference_after_5_steps": max_relative_difference(model, optimizer),
            }
            rows.append(row)
            console.print(
                f"{name:>20} {optimizer:>13}: default {default:8.2f} ms, fused {fused:8.2f} ms "
                f"({row['speedup']:.1f}x), difference {row['max_relative_difference_after_5_steps']:.1e}"
            )
    write_json(args.out, {"benchmark": "optimizer_step", "threads": args.threads, "steps": rows})


if __name__ == "__main__":
    main()
