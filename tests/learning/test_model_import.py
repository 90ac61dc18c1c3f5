"""Importing a model someone already trained: torchvision, timm, Hugging Face and plugin sources,
checked against the safetensors header before any weight is read, then taught without forgetting."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save_file

from app.learning import ContinualLearner, TaskData, TrainConfig
from app.learning.imported import ImportOptions, plan_import
from app.learning.sources import ImportRefused, TooManyParameters, UnsafeWeights, architectures

QUICK = TrainConfig(epochs=1, min_steps=2, patience=0, batch_size=8)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def torchvision_file(tmp_path, builder: str, n_classes: int):
    model = torchvision.models.get_model(builder, weights=None, num_classes=n_classes).eval()
    path = tmp_path / f"{builder}.safetensors"
    save_file(model.state_dict(), path)
    return model, path


def reference_probabilities(model, x: np.ndarray, mean: float, std: float) -> np.ndarray:
    with torch.no_grad():
        logits = model((torch.tensor(x).float() / 255 - mean) / std)
    logits = getattr(logits, "logits", logits)
    return logits.softmax(-1).max(-1).values.numpy()


@pytest.mark.parametrize(("builder", "trainable"), [("resnet18", "head"), ("mobilenet_v3_small", "last:1")])
def test_torchvision_import_answers_as_the_weights_did_and_grows_its_head(tmp_path, builder, trainable):
    model, path = torchvision_file(tmp_path, builder, 3)
    plan = plan_import(
        f"torchvision:{builder}",
        (3, 32, 32),
        path,
        {"labels": ["a", "b", "c"], "mean": [0.5] * 3, "std": [0.25] * 3, "trainable": trainable, "memory_size": 30},
    )
    learner = ContinualLearner.import_model(plan, input_scale=1 / 255)
    x = images(16)
    served = [p.probability for p in learner.predict(x)]
    np.testing.assert_allclose(served, reference_probabilities(model, x, 0.5, 0.25), atol=1e-4)

    learner.adopt_base_task("1", TaskData(x, np.array(["a", "b", "c", "a"] * 4)))
    trainable_count = sum(p.numel() for p in learner.network.parameters() if p.requires_grad)
    assert trainable_count < sum(p.numel() for p in learner.network.parameters())
    assert learner.consolidation.nbytes() == 2 * 4 * trainable_count  # Fisher + anchor of trainable parameters only
    assert len(learner.memory) == 16

    head_before = learner.network.head.weight.detach().clone()
    learner.learn_task(
        "2", TaskData(images(16, 1), np.array(["c", "d"] * 8)), strategy="ewc_replay", train_config=QUICK
    )
    assert learner.labels == ["a", "b", "c", "d"]
    assert learner.network.head.out_features == 4
    assert learner.network.head.weight.shape[0] == 4 and head_before.shape[0] == 3

    served_copy = ContinualLearner.from_exports(learner.export_weights())
    learning_copy = ContinualLearner.from_exports(learner.export_weights(), learner.export_consolidation())
    expected = [p.probability for p in learner.predict(x)]
    np.testing.assert_allclose([p.probability for p in served_copy.predict(x)], expected, atol=1e-5)
    np.testing.assert_allclose([p.probability for p in learning_copy.predict(x)], expected, atol=1e-5)


def test_lora_trains_adapters_and_head_only_and_serves_merged(tmp_path):
    model, path = torchvision_file(tmp_path, "resnet18", 2)
    plan = plan_import(
        "torchvision:resnet18", (3, 32, 32), path, {"labels": [0, 1], "trainable": "lora", "lora_rank": 2}
    )
    learner = ContinualLearner.import_model(plan, input_scale=1 / 255)
    x = images(16)
    np.testing.assert_allclose(
        [p.probability for p in learner.predict(x)], reference_probabilities(model, x, 0.0, 1.0), atol=1e-4
    )
    learner.adopt_base_task("1", TaskData(x, np.array([0, 1] * 8)))
    trained = {name for name, p in learner.network.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in name or ".fc." in name for name in trained)
    frozen_before = {n: p.detach().clone() for n, p in learner.network.named_parameters() if not p.requires_grad}
    learner.learn_task("2", TaskData(images(16, 2), np.array([1, 2] * 8)), strategy="ewc", train_config=QUICK)
    for name, p in learner.network.named_parameters():
        if name in frozen_before:
            assert torch.equal(p, frozen_before[name]), name
    served = ContinualLearner.from_exports(learner.export_weights())
    assert not any("lora_" in name for name, _ in served.network.named_parameters())  # adapters merged
    np.testing.assert_allclose(
        [p.probability for p in served.predict(x)], [p.probability for p in learner.predict(x)], atol=1e-4
    )


def test_timm_import_takes_its_head_and_normalisation_from_timm(tmp_path):
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet10t", pretrained=False, num_classes=4).eval()
    path = tmp_path / "timm.safetensors"
    save_file(model.state_dict(), path)
    plan = plan_import("timm:resnet10t", (3, 32, 32), path, {"labels": list("wxyz"), "trainable": "head"})
    config = timm.get_pretrained_cfg("resnet10t")
    assert plan.preprocessing["mean"] == pytest.approx(list(config.mean))
    learner = ContinualLearner.import_model(plan, input_scale=1 / 255)
    x = images(8)
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model((torch.tensor(x).float() / 255 - mean) / std).softmax(-1).max(-1).values.numpy()
    np.testing.assert_allclose([p.probability for p in learner.predict(x)], expected, atol=1e-4)
    learner.learn_task("1", TaskData(x, np.array(list("wxyv") * 2)), strategy="ewc", train_config=QUICK)
    assert learner.labels == ["w", "x", "y", "z", "v"]


def hf_directory(tmp_path, model_type_override: str | None = None):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=32,
        patch_size=8,
        id2label={0: "cat", 1: "dog"},
        label2id={"cat": 0, "dog": 1},
    )
    model = transformers.ViTForImageClassification(config).eval()
    directory = tmp_path / "hf"
    model.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    if model_type_override:
        values = json.loads((directory / "config.json").read_text())
        values["model_type"] = model_type_override
        (directory / "config.json").write_text(json.dumps(values))
    return model, directory


def test_hf_import_reads_labels_and_normalisation_from_its_configs(tmp_path):
    model, directory = hf_directory(tmp_path)
    plan = plan_import("hf", (3, 32, 32), directory, {"trainable": "lora", "lora_rank": 2})
    assert plan.labels == ["cat", "dog"]
    assert plan.preprocessing == {"mean": [0.5] * 3, "std": [0.5] * 3}
    learner = ContinualLearner.import_model(plan, input_scale=1 / 255)
    x = images(6)
    np.testing.assert_allclose(
        [p.probability for p in learner.predict(x)], reference_probabilities(model, x, 0.5, 0.5), atol=1e-4
    )
    learner.adopt_base_task("1", TaskData(x, np.array(["cat", "dog"] * 3)))
    learner.learn_task("2", TaskData(images(6, 3), np.array(["dog", "bird"] * 3)), strategy="ewc", train_config=QUICK)
    assert learner.labels == ["cat", "dog", "bird"]
    served = ContinualLearner.from_exports(learner.export_weights())
    np.testing.assert_allclose(
        [p.probability for p in served.predict(x)], [p.probability for p in learner.predict(x)], atol=1e-4
    )


def test_hf_config_of_an_unknown_model_type_is_refused(tmp_path):
    _, directory = hf_directory(tmp_path, model_type_override="my_remote_model")
    with pytest.raises(ImportRefused, match="model_type 'my_remote_model'"):
        plan_import("hf", (3, 32, 32), directory)


PLUGIN = """
from torch import nn

def tiny(input_shape, n_classes, width=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], width), nn.ReLU(),
                         nn.Linear(width, n_classes))
"""


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A package declaring the entry point ``tiny`` in ``retain.architectures``, installed by putting its
    module and dist-info on sys.path (what pip would leave in site-packages)."""
    root = tmp_path / "site"
    (root / "retain_tiny_plugin-0.1.dist-info").mkdir(parents=True)
    (root / "retain_tiny_plugin.py").write_text(PLUGIN)
    info = root / "retain_tiny_plugin-0.1.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: retain-tiny-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[retain.architectures]\ntiny = retain_tiny_plugin:tiny\n")
    monkeypatch.syspath_prepend(str(root))
    yield "tiny"
    sys.modules.pop("retain_tiny_plugin", None)


def test_plugin_architecture_is_listed_and_imports(tmp_path, installed_plugin):
    assert installed_plugin in architectures()["plugins"]
    sys.path.insert(0, str(tmp_path / "site"))
    from retain_tiny_plugin import tiny

    model = tiny((3, 32, 32), 2, width=4)
    path = tmp_path / "tiny.safetensors"
    save_file(model.state_dict(), path)
    plan = plan_import("tiny", (3, 32, 32), path, {"labels": ["no", "yes"], "width": 4})
    learner = ContinualLearner.import_model(plan, input_scale=1 / 255)
    x = images(4)
    np.testing.assert_allclose(
        [p.probability for p in learner.predict(x)], reference_probabilities(model, x, 0.0, 1.0), atol=1e-5
    )


def test_refusals_name_what_is_wrong(tmp_path):
    _, path = torchvision_file(tmp_path, "resnet18", 3)
    with pytest.raises(ImportRefused, match="labels"):
        plan_import("torchvision:resnet18", (3, 32, 32), path)
    with pytest.raises(ImportRefused, match="3 outputs but 2 labels"):
        plan_import("torchvision:resnet18", (3, 32, 32), path, {"labels": [0, 1]})
    with pytest.raises(ImportRefused, match=r"96 missing keys \(layer1.2.bn1.bias"):
        plan_import("torchvision:resnet34", (3, 32, 32), path, {"labels": [0, 1, 2]})
    with pytest.raises(ImportRefused, match=r"does not take inputs of shape \[1, 32, 32\]"):
        plan_import("torchvision:resnet18", (1, 32, 32), path, {"labels": [0, 1, 2]})
    with pytest.raises(TooManyParameters, match="RETAIN_MAX_MODEL_PARAMETERS"):
        plan_import("torchvision:resnet18", (3, 32, 32), path, {"labels": [0, 1, 2]}, max_parameters=1_000_000)
    with pytest.raises(ImportRefused, match="trainable"):
        ImportOptions.parse({"trainable": "some"})
    pickled = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pickled)
    for name in ("model.pt", "model.safetensors"):
        renamed = pickled.rename(tmp_path / name)
        with pytest.raises(UnsafeWeights, match="safetensors.torch|save_file") as refused:
            plan_import("torchvision:resnet18", (3, 32, 32), renamed, {"labels": [0, 1, 2]})
        assert refused.value.status == 415
        pickled = renamed


def test_new_head_drops_the_old_classes(tmp_path):
    _, path = torchvision_file(tmp_path, "resnet18", 7)
    plan = plan_import("torchvision:resnet18", (3, 32, 32), path, {"new_head": True, "trainable": "head"})
    learner = ContinualLearner.import_model(plan, input_scale=1 / 255)
    assert learner.labels == [] and learner.network.head.out_features == 0
    learner.learn_task("1", TaskData(images(8), np.array(["p", "q"] * 4)), strategy="ewc", train_config=QUICK)
    assert learner.labels == ["p", "q"] and learner.network.head.out_features == 2
