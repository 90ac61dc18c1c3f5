"""`retain import` and `retain architectures` against a real server (`retain serve` in a subprocess)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from app import cli
from app.cli import render
from app.learning.models import build_model
from app.processes import LocalServer

pytestmark = pytest.mark.slow  # a real server process per module


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalServer(tmp_path_factory.mktemp("cli-import-server")) as running:
        yield running


def run_cli(capsys, server, *argv: str) -> tuple[int, str]:
    render.console.width = 200
    code = cli.main(["--url", server.url, "--api-key", server.api_key, *argv])
    return code, capsys.readouterr().out


def test_import_follow_serves_the_imported_weights(capsys, server, tmp_path):
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 2, hidden=[8]).eval()
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    x = np.random.default_rng(0).integers(0, 256, (60, 1, 8, 8), dtype=np.uint8)
    with torch.no_grad():
        y = np.array(["no", "yes"])[model(torch.tensor(x).float() / 255).argmax(-1).numpy()]
    np.savez(tmp_path / "base.npz", x=x, y=y)
    code, out = run_cli(
        capsys,
        server,
        "import",
        str(tmp_path / "model.safetensors"),
        "--name",
        "cli-imported",
        "--source",
        "mlp",
        "--option",
        'labels=["no","yes"]',
        "--option",
        "hidden=[8]",
        "--base-data",
        str(tmp_path / "base.npz"),
        "--follow",
        "--json",
    )
    job = json.loads(out)
    assert code == 0 and job["status"] == "succeeded" and job["model_version"] == 1, out
    code, out = run_cli(capsys, server, "architectures", "--json")
    assert code == 0 and "resnet18" in json.loads(out)["torchvision"]


def test_import_of_a_pickle_says_how_to_convert(capsys, server, tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "model.pt")
    code = cli.main(
        [
            "--url",
            server.url,
            "--api-key",
            server.api_key,
            "import",
            str(tmp_path / "model.pt"),
            "--name",
            "p",
            "--source",
            "mlp",
        ]
    )
    captured = capsys.readouterr()
    assert code != 0 and "safetensors" in captured.err + captured.out


def test_import_of_a_text_classifier_folder_serves_text(capsys, server, tiny_text_model):
    """A save_pretrained folder of a sequence classifier (zipped on the fly): a text model, version 1."""
    code, out = run_cli(
        capsys,
        server,
        "import",
        str(tiny_text_model),
        "--name",
        "cli-text",
        "--source",
        "hf",
        "--option",
        "max_length=32",
        "--follow",
        "--json",
    )
    job = json.loads(out)
    assert code == 0 and job["status"] == "succeeded" and job["model_version"] == 1, out
    code, out = run_cli(capsys, server, "models", "--json")
    assert code == 0, out
    listed = json.loads(out)
    models = listed if isinstance(listed, list) else listed.get("models", listed.get("items"))
    assert next(m for m in models if m["name"] == "cli-text")["input_shape"] == ["text"]
