"""The pieces of the serving benchmark's peer comparison that run without the peers: the weights
the peers load give retain's answers, requests are rebuilt per sample, answers are read, and a
server's memory is summed over its process tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path[:0] = [str(BENCHMARKS), str(BENCHMARKS / "peers")]

import serving  # noqa: E402
import serving_peers  # noqa: E402
from digits_mlp import DigitsMLP  # noqa: E402

from app.learning.models import MLP  # noqa: E402
from app.learning.preprocessing import InputScaling  # noqa: E402


@pytest.mark.parametrize("standardize", [False, True])
def test_exported_weights_answer_as_the_learner_does(tmp_path, standardize):
    torch.manual_seed(0)
    network = MLP((64,), 10, (100, 100)).eval()
    labels = [3, 1, 4, 0, 5, 9, 2, 6, 8, 7]  # a vocabulary that is not the output order
    samples = np.random.default_rng(0).uniform(0, 16, size=(50, 64)).astype(np.float32)
    scaling = InputScaling(scale=1 / 16, standardize=standardize)
    scaling.fit(samples, torch.from_numpy(samples))
    directory = serving_peers.export_weights(network, scaling, labels, tmp_path / "weights")

    predicted, probability = DigitsMLP(directory).predict(samples)

    with torch.no_grad():
        expected = torch.softmax(network(scaling(torch.from_numpy(samples))), dim=-1)
    assert scaling.standardized == standardize
    assert predicted.tolist() == [labels[i] for i in expected.argmax(dim=-1).tolist()]
    np.testing.assert_allclose(probability, expected.max(dim=-1).values.numpy(), rtol=1e-5)
    assert (directory / "digits_mlp.py").exists()  # the peers load it from the weights folder


def test_one_sample_bodies_are_rebuilt_for_another_sample():
    first, second = np.zeros(64, np.float32), np.arange(64, dtype=np.float32)
    oip = serving.re_body(serving_peers.oip_json_body(first), second)
    plain = serving.re_body(serving_peers.plain_body(first), second)

    assert json.loads(oip)["inputs"][0]["data"] == second.tolist()
    assert json.loads(oip)["inputs"][0]["shape"] == [1, 64]
    assert json.loads(plain) == {"inputs": [second.tolist()]}


@pytest.mark.parametrize("data", [[7], [[7]]])  # [n] (KServe, retain) and [n, 1] (Triton, MLServer)
def test_oip_answers_are_read_whatever_the_label_shape(data):
    answer = {"outputs": [{"name": "probability", "data": [0.5]}, {"name": "label", "data": data}]}
    assert serving_peers.oip_label(answer) == 7


def test_memory_is_summed_over_the_process_tree():
    alone, processes_alone = serving_peers.tree_rss_mib(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with_child, processes = serving_peers.tree_rss_mib(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert processes == processes_alone + 1
    assert with_child > alone


def test_peers_are_chosen_by_name():
    assert serving.chosen_peers("none") == []
    with pytest.raises(SystemExit, match="unknown peers"):
        serving.chosen_peers("torchserve,not-a-server")
