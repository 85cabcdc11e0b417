"""VLMo learns from the image, on real easy-VQA data (a test a broken model fails: image-blind fusion, experts routed
wrongly, a wrong label mapping), unlike `0 <= score <= 1`.

1. A tiny VLMo trained from scratch overfits 64 easy-VQA (image, question) pairs to >= 0.9 training accuracy. The
   same four questions are asked about many images with different answers, so a model that ignores the image stays
   under the text-only ceiling (< 0.7).
2. A short run on colour questions beats the text-only prior on held-out colour questions by a wide margin.
"""

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from hf_vl import VlmoConfig, VlmoForQuestionAnswering, VlmoImageProcessor, VlmoProcessor
from hf_vl.data import easy_vqa_answer_vocab, load_easy_vqa
from hf_vl.training import local_pretrained_path

COLOURS = {"red", "green", "blue", "black", "gray", "teal", "brown", "yellow"}
IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def processor():
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(local_pretrained_path("all-MiniLM-L6-v2"))
    return VlmoProcessor(VlmoImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), tokenizer)


@pytest.fixture(scope="module")
def label2id():
    return {answer: index for index, answer in enumerate(easy_vqa_answer_vocab())}


def build(processor, label2id, seed=0):
    torch.manual_seed(seed)
    config = VlmoConfig(
        vocab_size=len(processor.tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, vl_ffn_start_layer=1, image_size=IMAGE_SIZE, patch_size=8, drop_path_rate=0.0,
        embedding_dropout_prob=0.0, initializer_range=64**-0.5, num_labels=len(label2id),
        id2label={index: answer for answer, index in label2id.items()}, label2id=label2id,
    )  # fmt: skip
    return VlmoForQuestionAnswering(config)


def encode(processor, rows, label2id):
    inputs = processor(images=[row["image"].convert("RGB") for row in rows], text=[row["question"] for row in rows],
                       padding="longest", return_tensors="pt")  # fmt: skip
    return dict(inputs), torch.tensor([label2id[row["answer"]] for row in rows])


def train(model, inputs, labels, steps, batch_size, lr=2e-3, seed=0):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(labels), (batch_size,), generator=generator)
        targets = F.one_hot(labels[index], model.config.num_labels).float()
        loss = model(**{key: value[index] for key, value in inputs.items()}, labels=targets).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def accuracy(model, inputs, labels):
    with torch.no_grad():
        return (model(**inputs).logits.argmax(-1) == labels).float().mean().item()


def test_tiny_vlmo_overfits_64_easy_vqa_examples(processor, label2id):
    train_rows = load_easy_vqa("train")
    frequent = [question for question, _ in Counter(train_rows["question"]).most_common(4)]
    picked = [index for index, question in enumerate(train_rows["question"]) if question in frequent]
    rows = [train_rows[index] for index in picked[:64]]
    by_question = {}
    for row in rows:
        by_question.setdefault(row["question"], Counter())[row["answer"]] += 1
    text_only_ceiling = sum(counts.most_common(1)[0][1] for counts in by_question.values()) / len(rows)
    assert text_only_ceiling < 0.7
    model = build(processor, label2id)
    inputs, labels = encode(processor, rows, label2id)
    train(model, inputs, labels, steps=150, batch_size=32)
    train_accuracy = accuracy(model, inputs, labels)
    assert train_accuracy >= 0.9, (train_accuracy, text_only_ceiling)


def test_short_run_beats_the_text_only_prior_on_colour_questions(processor, label2id):
    train_rows = [row for row in load_easy_vqa("train", max_questions_per_split=4000, seed=0) if row["answer"] in COLOURS]
    test_rows = [row for row in load_easy_vqa("test", max_questions_per_split=1000, seed=0) if row["answer"] in COLOURS]
    most_frequent = Counter(row["answer"] for row in train_rows).most_common(1)[0][0]
    prior = sum(row["answer"] == most_frequent for row in test_rows) / len(test_rows)
    model = build(processor, label2id)
    inputs, labels = encode(processor, train_rows, label2id)
    test_inputs, test_labels = encode(processor, test_rows, label2id)
    train(model, inputs, labels, steps=60, batch_size=32)
    colour_accuracy = accuracy(model, test_inputs, test_labels)
    assert colour_accuracy >= prior + 0.3, (colour_accuracy, prior)
