"""mkdocs hook: the pages' generated parts, rebuilt on every build so they cannot go stale.

A page asks for one with a marker line: ``<!-- generated: settings -->`` becomes the table of every
setting, read from the field descriptions of ``app.settings.Settings`` (so a new setting appears with
its description, or the build shows it has none); ``<!-- generated: benchmarks -->`` becomes the
headline figures of every ``benchmarks/results/*.json``, so a new result file appears without
editing a page. Files of a kind this hook does not know get their top-level numbers listed.
"""

from __future__ import annotations

import json
import logging
import sys
import types
import typing
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
MARKER = "<!-- generated: {} -->"

log = logging.getLogger("mkdocs.plugins.retain")


def on_page_markdown(markdown: str, page, config, files) -> str:
    for name, render in (("settings", settings_table), ("benchmarks", benchmark_results)):
        marker = MARKER.format(name)
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    return markdown


def on_config(config):
    # Generated from these: `mkdocs serve` rebuilds when they change.
    config.watch.extend([str(REPO / "app" / "settings.py"), str(RESULTS)])
    return config


# --- configuration -----------------------------------------------------------------------------


def settings_table() -> str:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from app.settings import Settings

    rows = ["| Environment variable | Type | Default | Description |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        if not field.description:
            log.warning("setting %s has no description: the configuration page needs one", name)
        variables = environment_names(name, field)
        rows.append(
            f"| {' or '.join(f'`{v}`' for v in variables)} | {cell(type_name(field.annotation))} "
            f"| {cell(default_text(field))} | {cell(field.description or '')} |"
        )
    return "\n".join(rows)


def environment_names(name: str, field) -> list[str]:
    """DATABASE_URL is read under its own alias; every other field as RETAIN_<NAME>."""
    aliases = getattr(field.validation_alias, "choices", None)
    if aliases:
        return [alias for alias in aliases if isinstance(alias, str) and alias.isupper()]
    return [f"RETAIN_{name.upper()}"]


def type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return " | ".join(str(arg) for arg in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in typing.get_args(annotation))
    if origin is list:
        return f"list of {type_name(typing.get_args(annotation)[0])} (comma-separated)"
    if annotation is type(None):
        return "unset"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "empty" if not value else f"`{value}`"
    if field.default is None:
        return "unset (see description)"
    if isinstance(field.default, bool):
        return f"`{str(field.default).lower()}`"
    return f"`{field.default}`"


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# --- benchmarks --------------------------------------------------------------------------------


def benchmark_results() -> str:
    sections = []
    for path in sorted(RESULTS.glob("*.json")):
        try:
            result = json.loads(path.read_text())
        except ValueError as error:  # a result file that is not JSON is broken: the strict build says so
            log.warning("benchmarks/results/%s is not JSON (%s)", path.name, error)
            continue
        if not isinstance(result, dict):
            result = {"result": result}
        try:
            body = headline(result)
        except (KeyError, TypeError, AttributeError, ValueError) as error:  # a new layout: its plain figures
            log.info("benchmarks/results/%s: no headline table for this layout (%s)", path.name, error)
            body = scalars(result)
        sections.append(f"### `{path.name}`\n\n{provenance(result)}\n\n{body}")
    folders = sorted(folder for folder in RESULTS.rglob("*") if folder.is_dir())  # nested ones too
    for folder in folders:
        sections.append(folder_table(folder))
    return "\n\n".join(sections)


def provenance(result: dict) -> str:
    machine = result.get("machine")
    machine = machine if isinstance(machine, dict) else {}
    where = ", ".join(
        str(part)
        for part in (
            f"{machine.get('cpu_count')} CPU cores" if machine.get("cpu_count") else None,
            machine.get("cpu"),
            f"torch threads: {machine.get('torch_threads')}" if machine.get("torch_threads") else None,
            f"GPU {machine['cuda']}" if machine.get("cuda") else "no GPU" if machine else None,
            f"torch {machine['torch']}" if machine.get("torch") else None,
        )
        if part
    )
    lines = []
    if result.get("command"):
        lines.append(f"`{result['command']}`")
    if where or result.get("finished_at"):
        lines.append(f"{where}; finished {result.get('finished_at', '?')}".strip("; "))
    return "  \n".join(lines)


def headline(result: dict) -> str:
    if isinstance(result.get("methods"), dict):
        return forgetting_table(result)
    kind = result.get("benchmark")
    if kind == "serving":
        return serving_table(result)
    if kind == "serving_instructions":
        return instructions_table(result)
    if "step_ratio_mlp" in result:
        return throughput_list(result)
    if "results" in result and isinstance(result["results"], dict) and "n_train" in result:
        return scaling_table(result)
    return scalars(result)


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, list):
        return ", ".join(fmt(item, digits) for item in value)
    return str(value)


def forgetting_table(result: dict) -> str:
    rows = [
        "| method | λ | avg acc | BWT | task 0 initial → final | kept | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, figures in result["methods"].items():
        lam = figures.get("lambda_per_update") or figures.get("lambda")
        lam = "auto: " + ", ".join(fmt(x, 0) for x in lam) if isinstance(lam, list) else fmt(lam, 0)
        rows.append(
            f"| {method} | {lam} | {fmt(figures.get('avg_acc'))} | {fmt(figures.get('bwt'))} "
            f"| {fmt(figures.get('task0_initial'))} → {fmt(figures.get('task0_final'))} "
            f"| {fmt(figures.get('task0_kept'))} | {fmt(figures.get('train_seconds'), 1)} |"
        )
    tasks = result.get("n_tasks")
    shape = result.get("input_shape")
    note = f"{tasks} tasks, input shape {shape}." if tasks else ""
    return (note + "\n\n" if note else "") + "\n".join(rows)


def serving_table(result: dict) -> str:
    rows = ["| endpoint | conns | p50 ms | p99 ms | req/s | errors |", "|---|---|---|---|---|---|"]
    for endpoint, runs in result["results"].items():
        for run in runs:
            rows.append(
                f"| {endpoint} | {run['connections']} | {fmt(run.get('p50_ms'), 2)} | {fmt(run.get('p99_ms'), 2)} "
                f"| {fmt(run.get('req_per_s'), 0)} | {run.get('errors', '–')} |"
            )
    targets = result.get("targets") or {}
    met = "\n".join(f"- {'met' if ok else '**not met**'}: {name}" for name, ok in targets.items())
    return "\n".join(rows) + ("\n\n" + met if met else "")


def instructions_table(result: dict) -> str:
    rows = ["| request | instructions a request | / POST /predict |", "|---|---|---|"]
    for request, figures in result["results"].items():
        rows.append(
            f"| {request}, one at a time | {figures['instructions_per_request']:,.0f} | {fmt(figures['vs_predict'])} |"
        )
    for request, figures in (result.get("under_load") or {}).items():
        rows.append(
            f"| {request}, {result.get('connections', '?')} in flight (event loop) "
            f"| {figures['event_loop_instructions_per_request']:,.0f} | {fmt(figures['vs_predict'])} |"
        )
    return "\n".join(rows)


def throughput_list(result: dict) -> str:
    return "\n".join(
        [
            f"- EWC training step / fine-tuning step: MLP {fmt(result['step_ratio_mlp'])}×, "
            f"CNN {fmt(result['step_ratio_cnn'])}×",
            f"- per-sample Fisher estimator / per-sample loop: {fmt(result['fisher_speedup_vs_loop'], 1)}×",
            f"- λ search / fixed-λ update: {fmt(result['lambda_search_over_plain_update'], 2)}×",
        ]
    )


def scaling_table(result: dict) -> str:
    rows = ["| consolidation | updates | seconds, update 2 | seconds, last | bytes, update 2 | bytes, last |"]
    rows.append("|---|---|---|---|---|---|")
    for mode, figures in result["results"].items():
        updates = figures["updates"]
        second, last = updates[1], updates[-1]
        rows.append(
            f"| {mode} | {len(updates)} | {fmt(second['total_seconds'], 2)} | {fmt(last['total_seconds'], 2)} "
            f"| {second['update_bytes']:,} | {last['update_bytes']:,} |"
        )
    return "\n".join(rows)


def scalars(result: dict) -> str:
    listed = [
        f"- `{key}`: {fmt(value)}"
        for key, value in result.items()
        if isinstance(value, int | float) and key not in ("finished_at",)
    ]
    return "\n".join(listed) or "*(no top-level figures)*"


def folder_table(folder: Path) -> str:
    where = folder.relative_to(RESULTS)
    rows = [
        f"### `{where}/`",
        "",
        "| file | command | average accuracy by method |",
        "|---|---|---|",
    ]
    for path in sorted(folder.glob("*.json")):
        try:
            result = json.loads(path.read_text())
        except ValueError as error:
            log.warning("benchmarks/results/%s/%s is not JSON (%s)", where, path.name, error)
            continue
        try:
            methods = result.get("methods") or {}
            figures = ", ".join(f"{name} {fmt(m.get('avg_acc'))}" for name, m in methods.items()) or "–"
            command = f"`{result['command']}`" if result.get("command") else "–"
        except (AttributeError, TypeError, KeyError) as error:  # a new layout: named, not summarised
            log.info("benchmarks/results/%s/%s: no summary for this layout (%s)", where, path.name, error)
            figures, command = "–", "–"
        rows.append(f"| `{path.name}` | {cell(command)} | {figures} |")
    return "\n".join(rows)
