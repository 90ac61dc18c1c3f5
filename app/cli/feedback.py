"""`retain feedback` (true labels for served predictions, or labelled samples) and `retain loop`
(turn a model's feedback loop on, and watch its live accuracy and trigger decisions)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.cli import render
from app.cli.command import EXIT_ERROR, EXIT_OK, Subcommands, add_command, print_answer
from app.client import ClientError, RetainClient


def register(commands: Subcommands) -> None:
    feedback = add_command(
        commands,
        "feedback",
        "send true labels: for predictions by their prediction_id, or labelled samples of their own",
        json_output=True,
    )
    feedback.add_argument("model")
    feedback.add_argument(
        "file", nargs="?", help="a CSV whose header is prediction_id,label; or labelled samples (npz, csv, parquet)"
    )
    feedback.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="PREDICTION_ID=LABEL",
        help="one label for one prediction (repeatable); an integer label is sent as a number",
    )
    feedback.set_defaults(handler=run_feedback)

    loop = add_command(
        commands, "loop", "a model's feedback loop: its policy, live accuracy and trigger decisions", json_output=True
    )
    loop.add_argument("model")
    loop.add_argument(
        "--policy",
        help='set the policy first: JSON or a .json file, e.g. \'{"log_rate": 1, "triggers": '
        '[{"kind": "every_n_labels", "n": 500}]}\'',
    )
    loop.set_defaults(handler=run_loop)


def parsed_labels(pairs: list[str]) -> dict:
    labels = {}
    for pair in pairs:
        prediction_id, separator, label = pair.partition("=")
        if not separator or not prediction_id:
            raise ClientError(f"--label takes PREDICTION_ID=LABEL; got {pair!r}")
        labels[prediction_id] = int(label) if label.lstrip("-").isdigit() else label
    return labels


def run_feedback(client: RetainClient, args: argparse.Namespace) -> int:
    if (args.file is None) == (not args.label):
        raise ClientError("send a file or --label PREDICTION_ID=LABEL pairs (one of the two)")
    answer = client.send_feedback(args.model, labels=parsed_labels(args.label) or None, file=args.file)
    print_answer(args, answer, show_feedback)
    return EXIT_OK if not answer["refused"] else EXIT_ERROR


def show_feedback(answer: dict) -> None:
    render.console.print(
        f"{answer['accepted']} label(s) kept, {answer['refused']} refused for [bold]{answer['model']}[/]"
    )
    for result in answer["results"]:
        if result["status"] != 200:
            render.console.print(f"  {result['prediction_id'] or '(sample)'}: {result['status']} {result['detail']}")


def run_loop(client: RetainClient, args: argparse.Namespace) -> int:
    if args.policy is not None:
        text = Path(args.policy).read_text() if args.policy.endswith(".json") else args.policy
        try:
            policy = json.loads(text)
        except ValueError as error:
            raise ClientError(f"--policy must be JSON or a .json file: {error}") from error
        client.set_feedback_policy(args.model, policy)
    return print_answer(args, client.feedback_status(args.model), lambda status: show_loop(args.model, status))


def show_loop(model: str, status: dict) -> None:
    policy = status["policy"]
    if policy is None:
        render.console.print(f"[bold]{model}[/] has no feedback loop (set one with --policy)")
        return
    kinds = ", ".join(trigger["kind"] for trigger in policy["triggers"]) or "none"
    render.console.print(
        f"[bold]{model}[/]: logs {policy['log_rate']:.0%} of predictions (at most {policy['log_max_samples']}), "
        f"triggers: {kinds}; {status['triggers']['buffered_labels']} label(s) buffered"
    )
    for version in status["live_accuracy"]["versions"]:
        render.console.print(
            f"  version {version['model_version']}{' (serving)' if version['serving'] else ''}: live accuracy "
            f"{render.fmt_accuracy(version['accuracy'])} over {version['n']}, at promotion "
            f"{render.fmt_accuracy(version['promotion_accuracy'])}"
        )
    for decision in status["triggers"]["decisions"][-10:]:
        mark = "fired" if decision["fired"] else "waits"
        task = f" -> task {decision['task_id']}" if decision["task_id"] else ""
        render.console.print(
            f"  {render.fmt_time(decision['created_at'])} {decision['trigger']} {mark}{task}: {decision['reason']}"
        )
