"""The training-time caches of examples/run_vqa.py (hf_vl.training.caching): a frozen text tower's features and
processed images are computed once and are the same as computing them every time; a run with the caches reaches the
same weights as a run without them."""

import sys

import datasets
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

import hf_vl
from hf_vl.data import load_easy_vqa
from hf_vl.training import local_pretrained_path
from hf_vl.training.caching import FrozenEncoderCache, ProcessedImageCache, image_cache_key

from test_run_vqa import ROOT, SCRIPT, TINY_ARGS, _run


@pytest.fixture(scope="module")
def text_tower():
    path = local_pretrained_path("all-MiniLM-L6-v2")
    model = AutoModel.from_pretrained(path, num_hidden_layers=2, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0, add_pooling_layer=False)
    for param in model.parameters():
        param.requires_grad = False
    return model, AutoTokenizer.from_pretrained(path)


QUESTIONS = ["what color is the shape?", "is there a red circle in the image?", "what shape is present?",
             "what color is the shape?"]


def test_frozen_encoder_cache_gives_the_tower_output_and_encodes_each_question_once(text_tower):
    model, tokenizer = text_tower
    batch = tokenizer(QUESTIONS, padding="longest", return_tensors="pt")
    expected = model(**batch).last_hidden_state
    cache = FrozenEncoderCache(model)
    try:
        model.train()  # the Trainer's mode: a dropout-free tower stays deterministic, so the cache applies
        first = model(**batch).last_hidden_state
        again = model(**tokenizer(QUESTIONS[::-1], padding="longest", return_tensors="pt")).last_hidden_state
        assert (cache.misses, cache.hits) == (3, 5)  # 3 distinct questions in 8 rows
        mask = batch["attention_mask"].bool()
        torch.testing.assert_close(first[mask], expected[mask], atol=1e-5, rtol=1e-5)
        assert first[~mask].abs().max() == 0  # padding is zeros (the fusion masks it)
        torch.testing.assert_close(again.flip(0)[:, : first.shape[1]], first)
        # gradients through the tower or extra outputs: the original forward runs
        outputs = model(**batch, output_hidden_states=True)
        assert outputs.hidden_states is not None and cache.misses == 3
    finally:
        cache.remove()
        model.eval()
    assert "forward" not in model.__dict__
    with pytest.raises(ValueError, match="frozen"):
        FrozenEncoderCache(torch.nn.Linear(2, 2))


def test_frozen_encoder_cache_steps_aside_while_dropout_is_active():
    path = local_pretrained_path("all-MiniLM-L6-v2")
    model = AutoModel.from_pretrained(path, num_hidden_layers=1, add_pooling_layer=False)  # dropout 0.1
    for param in model.parameters():
        param.requires_grad = False
    tokenizer = AutoTokenizer.from_pretrained(path)
    cache = FrozenEncoderCache(model)
    batch = tokenizer(QUESTIONS, padding="longest", return_tensors="pt")
    model.train()
    model(**batch)
    assert cache.hits == cache.misses == 0  # random features are not cached
    model.eval()
    model(**batch)
    assert cache.misses == 3


def test_processed_image_cache_processes_each_image_once():
    rows = load_easy_vqa("test", max_questions_per_split=40, seed=0)
    raw = rows.cast_column("image", datasets.Image(decode=False))
    values = [raw[i]["image"] for i in range(len(raw))]
    assert all(isinstance(image_cache_key(value), str) for value in values)  # keyed by file path
    processor = hf_vl.MeterImageProcessor(resolution=32)
    calls = []

    def process(batch):
        calls.append(len(batch))
        return dict(processor(images=[datasets.Image().decode_example(v).convert("RGB") for v in batch],
                              return_tensors="pt"))

    cache = ProcessedImageCache(process)
    cached = cache(values + values)["pixel_values"]
    expected = processor(images=[image.convert("RGB") for image in rows["image"]], return_tensors="pt")["pixel_values"]
    assert torch.equal(cached[: len(values)], expected) and torch.equal(cached[len(values) :], expected)
    distinct = len({value["path"] for value in values})
    assert cache.misses == len(calls) == distinct and cache.hits == 2 * len(values) - distinct


def test_a_run_with_the_caches_matches_a_run_without(tmp_path):
    runs = {}
    for name, flags in (("cached", []), ("uncached", ["--cache_images", "false", "--cache_text_features", "false"])):
        runs[name] = tmp_path / name
        _run([sys.executable, str(SCRIPT), "--output_dir", str(runs[name]), *TINY_ARGS, "--do_train", *flags],
             cwd=ROOT)
    cached, uncached = load_file(runs["cached"] / "model.safetensors"), load_file(runs["uncached"] / "model.safetensors")
    assert cached.keys() == uncached.keys()
    for key in cached:  # the text features of the cache are computed per question: equal up to float rounding
        torch.testing.assert_close(cached[key], uncached[key], atol=1e-4, rtol=1e-4, msg=key)


def test_region_collator_extracts_each_images_regions_once():
    """Region models: with the image cache each image's grid regions are extracted once and the batches equal the
    uncached collator's (questions, regions, labels)."""
    sys.path.insert(0, str(ROOT / "examples"))
    from run_vqa import VqaCollator

    from hf_vl.regions import GridFeatureExtractor, RegionProcessor

    processor = RegionProcessor(AutoTokenizer.from_pretrained(local_pretrained_path("minilm")),
                                GridFeatureExtractor(grid_size=4, pos_dim=4))  # fmt: skip
    questions = load_easy_vqa("train").select(range(24))
    label2id = {answer: i for i, answer in enumerate(sorted({a for answers in questions["answers"] for a in answers}))}
    args = (processor, label2id, "image", "question", "answers", 24)
    cached = VqaCollator(*args, cache_images=True)
    plain = VqaCollator(*args, cache_images=False)
    undecoded = list(questions.cast_column("image", datasets.Image(decode=False)))
    for start in (0, 12, 0):  # the third batch is served from the cache
        expected = plain(list(questions.select(range(start, start + 12))))
        batch = cached(undecoded[start : start + 12])
        assert set(batch) == set(expected)
        for key, value in expected.items():
            torch.testing.assert_close(batch[key], value, atol=1e-6, rtol=1e-6)
    assert cached.image_cache.misses == len(set(questions["image_id"]))
    assert cached.image_cache.hits == 36 - cached.image_cache.misses
