"""A BERT sequence classifier and its WordPiece tokenizer, built offline from texts (nothing is
downloaded): the tokenizer trained with ``tokenizers`` on ``corpus``, the model randomly initialised
with ``labels`` as its id2label. benchmarks/text.py pretrains one; tests/tiny_text_model.py saves a
tiny one as the suite's "pretrained" text model."""

from __future__ import annotations

from collections.abc import Sequence

import torch

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def wordpiece_tokenizer(corpus: Sequence[str], vocab_size: int):
    """A lowercasing BERT WordPiece tokenizer trained on ``corpus``, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(
        corpus, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    )
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def untrained_bert_classifier(
    corpus: Sequence[str],
    labels: Sequence[str],
    *,
    vocab_size: int,
    hidden_size: int,
    layers: int,
    heads: int,
    intermediate_size: int,
    max_positions: int,
    seed: int,
):
    """(model, tokenizer): a ``BertForSequenceClassification`` of the given shape, its weights drawn
    with ``seed``, and the tokenizer trained on ``corpus``, whose vocabulary and padding id it uses."""
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = wordpiece_tokenizer(corpus, vocab_size)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.backend_tokenizer.get_vocab_size(),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_positions,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        pad_token_id=tokenizer.pad_token_id,
    )
    return BertForSequenceClassification(config), tokenizer
