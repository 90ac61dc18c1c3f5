"""`retain predict`: labels for samples read from an .npz/.npy/.json file or a JSON string, or for
texts given with ``--text`` (a text model; repeat it for several)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.cli import render
from app.cli.command import EXIT_OK, Subcommands, add_command
from app.client import ClientError, RetainClient


def register(commands: Subcommands) -> None:
    predict = add_command(commands, "predict", "predict labels for samples", json_output=True)
    predict.add_argument("model")
    predict.add_argument("inputs", nargs="?", help="an .npz/.npy/.json file, or a JSON list of samples")
    predict.add_argument(
        "--text", action="append", metavar="TEXT", help="a text to classify (text models; repeat for several)"
    )
    predict.add_argument("--task", type=int, help="task id: task-aware prediction (required for ccll models)")
    predict.add_argument("--top-k", type=int, default=1)
    predict.add_argument("--version", type=int, help="a version other than the serving one")
    predict.add_argument("--key", help="array to read from an .npz (default x)")
    predict.add_argument("--limit", type=int, help="predict only the first N samples")
    predict.set_defaults(handler=run_predict)


def run_predict(client: RetainClient, args: argparse.Namespace) -> int:
    if (args.inputs is None) == (not args.text):
        raise ClientError("give either INPUTS (a file or a JSON list of samples) or --text, not both or neither")
    if args.text:
        inputs, expected = args.text[: args.limit], None
    else:
        inputs, expected = load_inputs(args.inputs, key=args.key, limit=args.limit)
    body = {"model": args.model, "inputs": inputs, "top_k": args.top_k}
    if args.task is not None:
        body["task_id"] = args.task
    if args.version is not None:
        body["version"] = args.version
    answer = client.request("POST", "/predict", json=body)
    if args.json:
        render.print_json(answer)
    else:
        title = f"{args.model} version {answer['model_version']}" + (f", task {args.task}" if args.task else "")
        render.show_predictions(answer, title, args.top_k, expected, texts=inputs if args.text else None)
    return EXIT_OK


def load_inputs(source: str, key: str | None = None, limit: int | None = None) -> tuple[list, list | None]:
    """Samples to predict, from an .npz/.npy/.json file or a JSON string.

    An .npz is read without pickle; its `x` (or --key) array is sent and, when the
    file also holds the matching labels (`y` for `x`, `y_test` for `x_test`), they
    are returned so the table can show them beside the predictions.
    """
    expected = None
    path = Path(source)
    if path.suffix in (".npz", ".npy", ".json") and not path.is_file():
        raise ClientError(f"{path}: no such file")
    if path.suffix in (".npz", ".npy"):
        import numpy as np  # only predict needs numpy; keep the other commands light

        try:
            loaded = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ClientError(f"cannot read {path} without pickle: {exc}") from exc
        if isinstance(loaded, np.ndarray):
            samples = loaded
        else:
            key = key or ("x" if "x" in loaded.files else loaded.files[0])
            if key not in loaded.files:
                raise ClientError(f"{path} has no array {key!r} (it has {', '.join(loaded.files)})")
            samples = loaded[key]
            label_key = {"x": "y", "x_test": "y_test"}.get(key)
            if label_key in loaded.files:
                expected = loaded[label_key][:limit].tolist()
        return samples[:limit].tolist(), expected
    text = path.read_text() if path.suffix == ".json" else source
    try:
        inputs = json.loads(text)
    except ValueError as exc:
        raise ClientError(f"inputs must be an .npz/.npy/.json file or a JSON list of samples: {exc}") from exc
    if isinstance(inputs, dict):
        inputs = inputs.get("inputs", inputs.get(key or "x"))
    if not isinstance(inputs, list):
        raise ClientError("inputs must be a JSON list of samples (nested lists of numbers)")
    return inputs[:limit], expected
