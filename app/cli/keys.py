"""`retain keys create|list|revoke`: API keys, managed with an admin key."""

from __future__ import annotations

import argparse

from app.cli import render
from app.cli.command import Subcommands, add_command, print_answer
from app.client import RetainClient


def register(commands: Subcommands) -> None:
    keys = commands.add_parser(
        "keys",
        help="API keys: create, list, revoke (needs an admin key)",
        description="API keys: create, list, revoke (needs an admin key)",
    )
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    create = add_command(actions, "create", "create a key; its secret is printed once", json_output=True)
    create.add_argument(
        "--scope",
        choices=("predict", "train", "admin"),
        required=True,
        help="predict: inference and reads; train: + teach, cancel; admin: everything",
    )
    create.add_argument("--name", required=True, help="what the key is for")
    create.set_defaults(handler=run_create)

    listing = add_command(actions, "list", "every key, without secrets", json_output=True)
    listing.set_defaults(handler=run_list)

    revoke = add_command(actions, "revoke", "revoke a key by id (at once)", json_output=True)
    revoke.add_argument("key_id", type=int)
    revoke.set_defaults(handler=run_revoke)


def run_create(client: RetainClient, args: argparse.Namespace) -> int:
    created = client.request("POST", "/keys", json={"scope": args.scope, "name": args.name})
    return print_answer(
        args,
        created,
        lambda key: render.console.print(
            f"Key {key['id']} ({key['name']!r}, scope {key['scope']}) — shown once, store it now:\n{key['key']}",
            highlight=False,
            soft_wrap=True,
        ),
    )


def run_list(client: RetainClient, args: argparse.Namespace) -> int:
    return print_answer(args, client.get("/keys"), render.show_keys)


def run_revoke(client: RetainClient, args: argparse.Namespace) -> int:
    revoked = client.request("DELETE", f"/keys/{args.key_id}")
    return print_answer(args, revoked, lambda key: render.console.print(f"Key {key['id']} ({key['name']!r}) revoked"))
