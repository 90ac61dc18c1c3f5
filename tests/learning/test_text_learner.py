"""Text models in the learning core: a Hugging Face sequence classifier (a tiny BERT built offline)
learns topic tasks through the learner, grows its head for new labels, trains what ``trainable``
says, and answers the same for a text alone or batched with longer ones."""

import copy
from dataclasses import replace

import pytest
import torch
from tiny_text_model import topic_task

from app.learning import ContinualLearner, TaskData, TrainConfig
from app.learning.text_source import PAD

FAST = TrainConfig(optimizer="adam", lr=2e-3, epochs=3, min_steps=0, patience=0, batch_size=16, device="cpu")


def learner(directory, **options) -> ContinualLearner:
    return ContinualLearner.from_text_directory(directory, {"max_length": 32, **options})


def task(topics, n=30, seed=0) -> TaskData:
    return TaskData(*topic_task(topics, n, seed))


def test_import_reads_labels_and_tokenizes_with_padding_marked(tiny_text_model):
    model = learner(tiny_text_model)
    assert model.labels == ["sport", "business"] and model.input_shape == ("text",)
    ids = model.text_source.encode(["goal", "the market and the shares of the bank today"])
    assert ids.shape == (2, 32) and ids.dtype == torch.int64
    lengths = (ids >= 0).sum(1)
    assert lengths[0] < lengths[1] and (ids[0, lengths[0] :] == PAD).all()
    longest = model.text_source.encode(["goal", "the market"], pad_to_max_length=False)
    assert longest.shape[1] == int(((longest >= 0).sum(1)).max())


def test_training_on_a_separable_text_task_improves_accuracy(tiny_text_model):
    model = learner(tiny_text_model)
    test = task(["sport", "business"], 20, seed=2)
    model.learn_task("warmup", task(["sport", "business"], 1), train_config=replace(FAST, epochs=1))
    before = model.evaluate(test).accuracy
    validation = {"1": task(["sport", "business"], 10, 1)}
    model.learn_task("1", task(["sport", "business"], 40), validation=validation, train_config=FAST)
    after = model.evaluate(test).accuracy
    assert after >= 0.9 and after > before


def test_a_text_answers_the_same_alone_and_batched_with_longer_ones(tiny_text_model):
    model = learner(tiny_text_model)
    model.learn_task("1", task(["sport", "business"], 20), train_config=FAST)
    texts = ["goal", "the market fell today and the bank said shares of the firm dropped after the deal", "win cup"]
    batched = model.predict(texts, top_k=2)
    for text, together in zip(texts, batched, strict=True):
        alone = model.predict([text], top_k=2)[0]
        assert alone.label == together.label
        assert alone.probability == pytest.approx(together.probability, abs=1e-5)


def test_new_labels_grow_the_head_keeping_old_rows_and_replay_is_bounded_in_bytes(tiny_text_model):
    per_sample = 32 * 8 + 8  # max_length int64 ids and the target
    model = learner(tiny_text_model, memory_size=1000, memory_bytes=20 * per_sample)
    model.learn_task("1", task(["sport", "business"], 30), strategy="ewc_replay", train_config=FAST)
    assert len(model.memory) == 20 and model.memory.nbytes <= 20 * per_sample
    grown = copy.deepcopy(model.network)
    grown.grow_head(4)
    assert torch.equal(grown.head.weight[:2], model.network.head.weight) and grown.head.out_features == 4
    result = model.learn_task(
        "2",
        task(["tech"], 30),
        strategy="ewc_replay",
        validation={"1": task(["sport", "business"], 10, 1), "2": task(["tech"], 10, 1)},
        train_config=FAST,
    )
    assert model.labels == ["sport", "business", "tech"] and model.network.head.out_features == 3
    assert len(model.memory) == 20 and result.validation_after["2"] >= 0.8


@pytest.mark.parametrize("trainable", ["head", "last:1", "lora"])
def test_trainable_modes_train_only_their_parameters(tiny_text_model, trainable):
    model = learner(tiny_text_model, trainable=trainable, lora_rank=4)
    before = {name: p.detach().clone() for name, p in model.network.named_parameters()}
    model.learn_task("1", task(["sport", "business"], 20), train_config=FAST)
    changed = {name for name, p in model.network.named_parameters() if not torch.equal(p, before[name])}
    tables = {name for name in before if ".embeddings." in name and "lora_" not in name}
    assert changed and not changed & tables  # the embeddings are frozen in every mode but all
    head = {name for name in before if ".classifier." in name}
    if trainable == "head":
        assert changed == head
    if trainable == "last:1":
        assert any(".layer.1." in name for name in changed) and not any(".layer.0." in name for name in changed)
    if trainable in ("last:1", "lora"):  # what follows the layers (BERT's pooler) learns too
        assert {name for name in before if ".pooler." in name} <= changed
    if trainable == "lora":
        adapted = changed - head - {name for name in before if ".pooler." in name}
        assert adapted and all("lora_" in name for name in adapted)
        assert any(".word_embeddings.lora_embedding_" in name for name in adapted)  # the tokens learn through theirs
        assert head <= changed  # the head learns with the adapters
    fisher = model.consolidation.entries["1"]["fisher"]
    assert set(fisher) == {name for name, p in model.network.named_parameters() if p.requires_grad}


def test_lora_serves_merged_weights_and_learns_on_after_a_reload(tiny_text_model, tmp_path):
    model = learner(tiny_text_model, trainable="lora", lora_rank=4)
    model.learn_task("1", task(["sport", "business"], 20), strategy="ewc_replay", train_config=FAST)
    texts = ["goal by the striker", "shares of the bank"]
    expected = model.predict(texts)
    weights = model.export_weights()
    assert not any("lora_" in name for name in weights[0])  # plain architecture: no adapter at inference
    served = ContinualLearner.from_exports(weights)
    for mine, theirs in zip(expected, served.predict(texts), strict=True):
        assert mine.label == theirs.label and mine.probability == pytest.approx(theirs.probability, abs=1e-4)
    model.save(tmp_path)
    again = ContinualLearner.load(tmp_path)
    assert again.network.adapter_tensors().keys() == model.network.adapter_tensors().keys()
    assert again.predict(texts)[0].probability == pytest.approx(expected[0].probability, abs=1e-4)
    again.learn_task("2", task(["tech"], 20), strategy="ewc_replay", train_config=FAST)
    assert again.labels == ["sport", "business", "tech"]


def test_a_version_stored_with_adapters_on_the_projections_alone_learns_on_with_them(
    tiny_text_model, tmp_path, monkeypatch
):
    """Versions stored before the token embeddings took adapters come back with the adapters they had."""
    from app.learning.text_source import TextClassifier

    targets = TextClassifier.adapter_targets
    with monkeypatch.context() as old_code:  # the token embeddings come first among the targets
        old_code.setattr(TextClassifier, "adapter_targets", lambda self: targets(self)[1:])
        old = learner(tiny_text_model, trainable="lora", lora_rank=4)
        old.learn_task("1", task(["sport", "business"], 20), strategy="ewc_replay", train_config=FAST)
        old.save(tmp_path)
    assert not any("embedding" in name for name in old.network.adapter_tensors())
    texts = ["goal by the striker", "shares of the bank"]
    again = ContinualLearner.load(tmp_path)
    assert again.network.adapter_tensors().keys() == old.network.adapter_tensors().keys()
    assert again.predict(texts)[0].probability == pytest.approx(old.predict(texts)[0].probability, abs=1e-4)
    again.learn_task("2", task(["tech"], 20), strategy="ewc_replay", train_config=FAST)
    assert again.labels == ["sport", "business", "tech"]
    assert again.network.adapter_tensors().keys() == old.network.adapter_tensors().keys()


def test_a_text_models_fisher_takes_chunks_no_larger_than_the_training_batch(tiny_text_model, monkeypatch):
    """A chunk of the traced Fisher keeps every layer's activations, as a training batch does."""
    from app.learning.strategies import ewc

    chunks: list[int] = []
    estimate = ewc.diagonal_fisher

    def recording(*args, chunk_size, **kwargs):
        chunks.append(chunk_size)
        return estimate(*args, chunk_size=chunk_size, **kwargs)

    monkeypatch.setattr(ewc, "diagonal_fisher", recording)
    model = learner(tiny_text_model)
    model.learn_task("1", task(["sport", "business"], 10), strategy="ewc", train_config=replace(FAST, batch_size=8))
    assert chunks == [8]
