"""`retain import`: bring a trained model (safetensors) in as a new model, then follow its import job."""

from __future__ import annotations

import argparse
import json

from app.cli import render
from app.cli.command import EXIT_OK, Subcommands, add_command
from app.cli.teach import parse_options, upload_and_follow
from app.client import RetainClient


def register(commands: Subcommands) -> None:
    command = add_command(
        commands, "import", "import a trained model (safetensors) as a new model, version 1 serving", json_output=True
    )
    command.add_argument(
        "weights", help="a .safetensors file, or for --source hf the folder save_pretrained wrote (zipped on the fly)"
    )
    command.add_argument("--name", required=True, help="the new model's name")
    command.add_argument(
        "--source",
        required=True,
        help="mlp | cnn | resnet18 | torchvision:<builder> | timm:<name> | hf | an installed plugin's name "
        "(`retain architectures` lists them)",
    )
    command.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help='labels=["cat","dog"], input_shape=[3,224,224], trainable=all|head|last:N|lora, lora_rank=8, '
        "mean=[...], std=[...], resize=[224,224], freeze_batchnorm=false, new_head=true, memory_size=1000, "
        "or an architecture option (repeatable)",
    )
    command.add_argument("--base-data", help="what the model already knows (any task format): becomes task 0")
    command.add_argument("--base-name", help="a name for the base task")
    command.add_argument("--follow", "-f", action="store_true", help="show a live progress bar until the import ends")
    command.set_defaults(handler=run_import)

    listing = add_command(commands, "architectures", "what an import's --source can be", json_output=True)
    listing.set_defaults(handler=run_architectures)


def run_import(client: RetainClient, args: argparse.Namespace) -> int:
    fields = {
        "name": args.name,
        "source": args.source,
        "options": json.dumps(parse_options(args.option)) if args.option else None,
        "base_name": args.base_name,
    }

    def finished(submitted: dict, job: dict) -> None:
        if job["status"] == "succeeded":
            render.console.print(f"[green]Model {args.name} imported[/]: version {job['model_version']} serving.")
        else:
            reason = job.get("error") or "no reason given"
            render.console.print(f"[red]Import job {job['id']} {job['status']}[/]: {reason}")

    return upload_and_follow(
        client,
        args,
        lambda progress: client.import_model(args.weights, fields, args.base_data, progress=progress),
        lambda submitted: (
            f"Model [bold]{args.name}[/] is being imported as job {submitted['job_id']}. "
            f"Follow it with `retain jobs {submitted['job_id']}`."
        ),
        finished,
    )


def run_architectures(client: RetainClient, args: argparse.Namespace) -> int:
    listed = client.get("/architectures")
    if args.json:
        render.print_json(listed)
        return EXIT_OK
    render.console.print(f"built-in: {', '.join(listed['builtin'])}")
    render.console.print(f"plugins: {', '.join(listed['plugins']) or '(none installed)'}")
    render.console.print(
        f"torchvision: {len(listed['torchvision'])} builders, e.g. {', '.join(listed['torchvision'][:6])}"
    )
    render.console.print(f"timm: {listed['timm']['count']} architectures")
    render.console.print(f"hf: {listed['hf']}")
    return EXIT_OK
