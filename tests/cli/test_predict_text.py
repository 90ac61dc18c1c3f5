"""`retain predict MODEL --text ...`: the texts go to POST /predict as a text model's inputs, and the
table shows each text beside its label."""

import argparse

import pytest

from app.cli import predict, render
from app.client import ClientError


class RecordingClient:
    def __init__(self):
        self.sent = []

    def request(self, method, path, **kwargs):
        self.sent.append((method, path, kwargs["json"]))
        n = len(kwargs["json"]["inputs"])
        return {"model_version": 3, "predictions": [{"label": "billing", "probability": 0.9, "top_k": None}] * n}


def arguments(**given) -> argparse.Namespace:
    defaults = dict(model="tickets", inputs=None, text=None, task=None, top_k=1, version=None, key=None, limit=None)
    return argparse.Namespace(**{**defaults, "json": False, **given})


def test_texts_are_sent_as_inputs_and_shown(capsys):
    client = RecordingClient()
    render.console.width = 200
    texts = ["my invoice is wrong", "charged twice"]
    assert predict.run_predict(client, arguments(text=texts)) == 0
    assert client.sent == [("POST", "/predict", {"model": "tickets", "inputs": texts, "top_k": 1})]
    out = capsys.readouterr().out
    assert "my invoice is wrong" in out and "billing" in out


def test_text_and_a_file_together_are_refused():
    with pytest.raises(ClientError, match="either INPUTS"):
        predict.run_predict(RecordingClient(), arguments(text=["a"], inputs="x.npz"))
    with pytest.raises(ClientError, match="either INPUTS"):
        predict.run_predict(RecordingClient(), arguments())
