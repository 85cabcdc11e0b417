"""METER learns from the image, on real easy-VQA data: tests a broken model fails (an image-blind fusion, a vision
tower cut from the loss, a wrong label mapping), unlike `0 <= score <= 1`.

1. A tiny METER overfits 64 easy-VQA (image, question) pairs to >= 0.9 training accuracy. The same questions are
   asked about many images with different answers, so a model that ignores the image cannot get there.
2. A short run on colour questions (150 steps of 32) beats the text-only prior on held-out colour questions by a
   wide margin.
"""

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from hf_vl import MeterForQuestionAnswering, MeterImageProcessor
from hf_vl.data import easy_vqa_answer_vocab, load_easy_vqa
from hf_vl.training import local_pretrained_path

COLOURS = {"red", "green", "blue", "black", "gray", "teal", "brown", "yellow"}
IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(2)
    path = local_pretrained_path("all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    vocab = easy_vqa_answer_vocab()
    return path, tokenizer, {answer: index for index, answer in enumerate(vocab)}


def build(path, label2id, seed=0):
    torch.manual_seed(seed)
    model = MeterForQuestionAnswering.from_text_vision_pretrained(
        path,
        {"model_type": "resnet", "embedding_size": 16, "hidden_sizes": [32, 64], "depths": [1, 1],
         "layer_type": "basic"},
        text_model_kwargs={"num_hidden_layers": 1},
        hidden_size=64, num_attention_heads=4, intermediate_size=128, num_fusion_layers=1,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        id2label={index: answer for answer, index in label2id.items()}, label2id=label2id,
    )
    for parameter in model.meter.text_model.parameters():
        parameter.requires_grad = False
    return model


def encode(model, rows, tokenizer, label2id):
    """Processed images, and the frozen text tower's output computed once (passed back as `text_embeds`)."""
    processor = MeterImageProcessor(resolution=IMAGE_SIZE)
    pixel_values = processor(images=[row["image"].convert("RGB") for row in rows], return_tensors="pt")["pixel_values"]
    text = tokenizer([row["question"] for row in rows], padding=True, return_tensors="pt")
    with torch.no_grad():
        text_embeds = model.meter.get_text_encoder_hidden_states(text["input_ids"], text["attention_mask"])
    labels = torch.tensor([label2id[row["answer"]] for row in rows])
    return {"pixel_values": pixel_values, "text_embeds": text_embeds, "attention_mask": text["attention_mask"]}, labels


def train(model, inputs, labels, steps, batch_size, lr=2e-3, seed=0):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    model.meter.text_model.eval()
    for _ in range(steps):
        index = torch.randint(0, len(labels), (batch_size,), generator=generator)
        targets = F.one_hot(labels[index], model.config.num_labels).float()  # soft scores of single answers
        loss = model(**{key: value[index] for key, value in inputs.items()}, labels=targets).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def accuracy(model, inputs, labels):
    with torch.no_grad():
        predictions = model(**inputs).logits.argmax(-1)
    return (predictions == labels).float().mean().item()


def test_tiny_meter_overfits_64_easy_vqa_examples(setup):
    path, tokenizer, label2id = setup
    # 64 examples of the 4 most frequent question strings: the same question about many images, different answers
    train_rows = load_easy_vqa("train")
    frequent = [question for question, _ in Counter(train_rows["question"]).most_common(4)]
    picked = [index for index, question in enumerate(train_rows["question"]) if question in frequent]
    rows = [train_rows[index] for index in picked[:64]]
    by_question = {}
    for row in rows:
        by_question.setdefault(row["question"], Counter())[row["answer"]] += 1
    text_only_ceiling = sum(counts.most_common(1)[0][1] for counts in by_question.values()) / len(rows)
    assert text_only_ceiling < 0.7  # the text alone cannot do it
    model = build(path, label2id)
    inputs, labels = encode(model, rows, tokenizer, label2id)
    train(model, inputs, labels, steps=300, batch_size=32)
    train_accuracy = accuracy(model, inputs, labels)
    assert train_accuracy >= 0.9, (train_accuracy, text_only_ceiling)


def test_short_run_beats_the_text_only_prior_on_colour_questions(setup):
    path, tokenizer, label2id = setup
    # colour questions only: the answer set is the same for every question, so only the image can tell them apart
    train_rows = [row for row in load_easy_vqa("train", max_questions_per_split=4000, seed=0) if row["answer"] in COLOURS]
    test_rows = [row for row in load_easy_vqa("test", max_questions_per_split=1000, seed=0) if row["answer"] in COLOURS]
    # text-only prior: the most frequent training answer of colour questions
    colour_answers = Counter(row["answer"] for row in train_rows if row["answer"] in COLOURS)
    prior = sum(row["answer"] == colour_answers.most_common(1)[0][0] for row in test_rows) / len(test_rows)
    model = build(path, label2id)
    inputs, labels = encode(model, train_rows, tokenizer, label2id)
    test_inputs, test_labels = encode(model, test_rows, tokenizer, label2id)
    train(model, inputs, labels, steps=150, batch_size=32)
    colour_accuracy = accuracy(model, test_inputs, test_labels)
    assert colour_accuracy >= prior + 0.3, (colour_accuracy, prior)
