"""`retain`: the command line for the retain service.

Every command but `serve`, `worker` and `demo` is a thin HTTP client of the API
(app.client), so the CLI behaves the same against the embedded default on a laptop
and against a docker compose deployment: point it elsewhere with --url or RETAIN_URL.

    retain serve                                 # API + embedded worker on SQLite
    retain teach digits.npz --model m --name a --follow
    retain accuracy 1        retain matrix m     retain versions m
    retain predict m samples.npz --top-k 3       retain rollback m 1

Read commands take --json and then print the server's JSON unchanged, for scripts.
Errors (server unreachable, a 4xx/5xx answer) print one clear message to stderr and
exit with status 1; the server's own message is shown as it is. `teach --follow`
exits 3 when the update was stored but the forgetting gate did not promote it.

Layout: entrypoint.py (parser, dispatch), one module per command group with each
command's arguments beside its handler (serve, teach, reports, predict, registry,
demo), render.py (everything printed), command.py (what the command modules share).
"""

from app.cli.entrypoint import main

__all__ = ["main"]
