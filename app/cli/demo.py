"""`retain demo`: the EWC vs fine-tuning experiment of app/demo.py, its options and its output."""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

from rich.console import Console

from app import demo
from app.cli import render
from app.cli.command import EXIT_ERROR, EXIT_OK, Subcommands, add_command
from app.client import ClientError
from app.processes import ServiceStartError


def register(commands: Subcommands) -> None:
    parser = add_command(commands, "demo", "the classic experiment: task A, then task B, with ewc and finetune")
    parser.add_argument(
        "--data-dir", help="torchvision root with MNIST/raw and FashionMNIST/raw: run MNIST -> FashionMNIST"
    )
    parser.add_argument("--samples", type=int, help="training samples per task (default: all)")
    parser.add_argument("--architecture", default="mlp", help="mlp (default) | cnn | resnet18")
    parser.add_argument("--epochs", type=int, help="epochs per update (default: the service's)")
    parser.add_argument(
        "--ewc-lambda", default="auto", help="EWC's λ: auto (default, the service searches) or a number"
    )
    parser.add_argument("--batch-size", type=int, help="default: the service's")
    parser.add_argument("--lr", type=float, help="default: the service's")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--save-tasks", metavar="DIR", help="only write the two task files (.npz, ready for `retain teach`) to DIR"
    )
    parser.set_defaults(handler=run, local=True)


def run(args: argparse.Namespace) -> int:
    """Without --url, on a child service of its own; with it, on that server."""
    console = Console(stderr=args.json)  # keep stdout pure JSON under --json
    options = demo.DemoOptions(
        data_dir=Path(args.data_dir) if args.data_dir else None,
        samples=args.samples,
        architecture=args.architecture,
        epochs=args.epochs,
        ewc_lambda=args.ewc_lambda,
        batch_size=args.batch_size,
        lr=args.lr,
    )
    try:
        if args.save_tasks:
            Path(args.save_tasks).mkdir(parents=True, exist_ok=True)
            demo.build_tasks(options, Path(args.save_tasks), console.print)
            return EXIT_OK
        results = demo.run_in_scratch(
            options,
            url=args.url if args.url_given else None,
            api_key=args.api_key,
            say=console.print,
            warn=partial(render.error_console.print, highlight=False),
            follow=partial(render.follow_jobs, show=not args.json),
        )
    except (ClientError, ServiceStartError) as exc:
        render.print_error(exc)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        render.show_demo_results(results, demo.BLOG_REFERENCE, to=console)
    return EXIT_OK
