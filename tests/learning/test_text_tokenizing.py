"""A long text is tokenized from its head when the tokenizer allows it (app/learning/text_source.py,
``head_of``): the ids must equal the tokenizer's on the whole text, for the kinds of tokenizer that
sequence classifiers ship (WordPiece as BERT's, byte-level BPE as RoBERTa's, Unigram with Metaspace),
on real articles and on texts made to break a cut (no spaces, runs of spaces, long words)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from tiny_text_model import topic_texts
from tokenizing import whole_text_ids  # benchmarks/: the tokenizer on whole texts, padded by it

from app.learning.text_source import HuggingFaceTextSource, tokenizer_files_in

MAX_LENGTH = 16


def crafted_texts() -> list[str]:
    words = " ".join(topic_texts("sport", 40))
    return [
        words,
        "goal",
        "x" * 3000,  # no space: nothing is cut
        " " * 2000 + words,  # the head holds no word: the whole text is tokenized
        "\n".join(topic_texts("tech", 60)),  # newlines between sentences, spaces within
        "Café naïve résumé, déjà-vu! " * 40,
        "goal   match    team\t\tplayer \n\n coach " * 30,
        "supercalifragilisticexpialidocious" * 8 + " " + words,  # a long word across the cut
        "a," * 500 + " b" * 200,
    ]


def _tokenizer(kind: str, corpus: list[str]):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<unk>", "<s>", "</s>"]
    if kind == "bytelevel":
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special)
    else:
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = normalizers.NFKC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=special, unk_token="<unk>")
    tokenizer.train_from_iterator(corpus, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        special_tokens=[("<s>", tokenizer.token_to_id("<s>")), ("</s>", tokenizer.token_to_id("</s>"))],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>")


def source_of(tmp_path, tiny_text_model, kind: str, truncation_side: str = "right") -> HuggingFaceTextSource:
    config = json.loads((tiny_text_model / "config.json").read_text())
    if kind == "wordpiece":
        directory = tiny_text_model
    else:
        directory = tmp_path / kind
        corpus = [text for topic in ("sport", "business", "tech") for text in topic_texts(topic, 50, seed=5)]
        _tokenizer(kind, corpus).save_pretrained(directory)
    files = tokenizer_files_in(directory)
    if truncation_side != "right":
        settings = json.loads(files["tokenizer_config.json"])
        files["tokenizer_config.json"] = json.dumps({**settings, "truncation_side": truncation_side})
    return HuggingFaceTextSource(config, files, {"max_length": MAX_LENGTH})


@pytest.mark.parametrize("kind", ["wordpiece", "bytelevel", "unigram"])
def test_ids_from_heads_equal_the_whole_texts_ids(tmp_path, tiny_text_model, shared_file, kind):
    source = source_of(tmp_path, tiny_text_model, kind)
    assert source.tokenizes_heads
    with shared_file("bbc-news", "bbc.csv").open(newline="") as handle:
        articles = [row["text"] for row, _ in zip(csv.DictReader(handle), range(300), strict=False)]
    texts = articles + crafted_texts()
    assert torch.equal(source.encode(texts), whole_text_ids(source, texts))


@pytest.mark.parametrize("unsafe", ["truncates on the left", "has an added token with a space"])
def test_tokenizers_a_head_could_mislead_read_whole_texts(tmp_path, tiny_text_model, unsafe):
    if unsafe == "truncates on the left":
        source = source_of(tmp_path, tiny_text_model, "wordpiece", truncation_side="left")
    else:
        source = source_of(tmp_path, tiny_text_model, "wordpiece")
        source.tokenizer.add_tokens(["goal match"])
        source.tokenizer.save_pretrained(tmp_path / "added")
        files = tokenizer_files_in(tmp_path / "added")
        source = HuggingFaceTextSource(source.config, files, {"max_length": MAX_LENGTH})
    assert not source.tokenizes_heads
    texts = crafted_texts()
    assert torch.equal(source.encode(texts), whole_text_ids(source, texts))
