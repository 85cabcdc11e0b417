"""Region models end to end on easy-VQA: `examples/run_vqa.py --model_type lxmert` from raw images and from
precomputed region features (extract -> TSV -> load + attach), and the vl-question-answering pipeline answering
from raw pixels and from precomputed features.

Until hf_vl's own region models exist, the region model is transformers' `LxmertForQuestionAnswering` (tiny config,
single-label cross-entropy QA head).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, LxmertConfig, LxmertForQuestionAnswering, pipeline

import hf_vl  # noqa: F401  (registers the pipelines)
from hf_vl.pipelines.vl_question_answering import is_single_label_qa_head
from hf_vl.regions import (
    GridFeatureExtractor,
    RegionProcessor,
    attach_region_features,
    extract_region_features,
    load_region_features,
    region_feature_lookup,
    write_region_features,
)
from hf_vl.regions.extract import unique_images
from hf_vl.training import local_pretrained_path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "run_vqa.py"
NUM_TRAIN, NUM_EVAL = 64, 32
TINY_LXMERT_ARGS = [
    "--model_type", "lxmert", "--max_train_samples", str(NUM_TRAIN), "--max_eval_samples", str(NUM_EVAL),
    "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16",
    "--hidden_size", "32", "--num_attention_heads", "4", "--text_num_layers", "1", "--vision_num_layers", "1",
    "--num_fusion_layers", "1", "--learning_rate", "1e-3", "--report_to", "none", "--save_strategy", "no",
    "--use_cpu", "true", "--dataloader_num_workers", "0", "--seed", "0",
]  # fmt: skip
EASY_VQA_ANSWERS = {"circle", "rectangle", "triangle", "yes", "no", "red", "green", "blue", "black", "gray", "teal",
                    "brown", "yellow"}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _run_script(args, cache_dir):
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
        HF_DATASETS_CACHE=str(cache_dir),
    )  # fmt: skip
    env.pop("PYTHONPATH", None)
    command = [sys.executable, str(SCRIPT), *args]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = f"{command}\n--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
    assert result.returncode == 0, output
    return result.stdout + result.stderr


def _load_example_module():
    """examples/run_vqa.py as a module: its `load_data` picks exactly the questions the script trains / evaluates on."""
    spec = importlib.util.spec_from_file_location("run_vqa_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lxmert_raw")
    output_dir = root / "lxmert-easy-vqa"
    log = _run_script(["--output_dir", str(output_dir), "--max_steps", "3", *TINY_LXMERT_ARGS], root / "cache")
    return output_dir, log


@pytest.fixture(scope="module")
def splits():
    run_vqa = _load_example_module()
    return run_vqa.load_data(run_vqa.DataArguments(max_train_samples=NUM_TRAIN, max_eval_samples=NUM_EVAL))


@pytest.fixture(scope="module")
def region_files(tmp_path_factory, raw_run, splits):
    """Regions of the train / eval images, extracted with the trained model's own extractor and written to TSV."""
    folder = tmp_path_factory.mktemp("lxmert_regions")
    extractor = RegionProcessor.from_pretrained(raw_run[0]).feature_extractor
    files, extracted = {}, {}
    for name, split in zip(("train", "eval"), splits):
        images = unique_images(split)
        with_regions = extract_region_features(images, extractor, batch_size=64, desc=None)
        files[name] = folder / f"easy_vqa_{name}_grid.tsv"
        assert write_region_features(with_regions, files[name]) == len(images)
        extracted[name] = with_regions.remove_columns("image").with_format("numpy")
    return files, extracted, folder


# --- (1) raw images ------------------------------------------------------------------------------------------------


def test_run_vqa_lxmert_from_raw_images(raw_run):
    output_dir, log = raw_run
    assert "Region inputs: extracted from the raw images; labels: index" in log
    assert "is not an hf_vl model, so the Hub-ready export" in log
    printed = re.search(rf"Test VQA accuracy \(test, {NUM_EVAL} questions\): ([0-9.]+)", log)
    assert printed, log[-3000:]
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert 0.0 <= results["eval_vqa_score"] <= 1.0
    assert abs(float(printed.group(1)) - results["eval_vqa_score"]) < 1e-4

    files = set(os.listdir(output_dir))
    assert {"config.json", "model.safetensors", "region_processor_config.json", "tokenizer.json"} <= files
    assert (output_dir / "region_extractor" / "region_extractor_config.json").is_file()
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "lxmert" and config["num_qa_labels"] == 13 and len(config["id2label"]) == 13
    assert set(config["id2label"].values()) == EASY_VQA_ANSWERS
    model = LxmertForQuestionAnswering.from_pretrained(output_dir)
    processor = RegionProcessor.from_pretrained(output_dir)
    assert isinstance(processor.feature_extractor, GridFeatureExtractor)
    assert processor.feat_dim == model.config.visual_feat_dim == 31
    processor.check_compatible(model.config)


# --- (2) precomputed features: extract -> TSV -> load + attach -> train ----------------------------------------------


def test_tsv_round_trip_gives_the_extracted_regions(region_files, splits, tmp_path):
    files, extracted, _ = region_files
    train = splits[0].remove_columns("image")
    regions = load_region_features(files["train"], max_regions=16, cache_dir=tmp_path)
    attached = attach_region_features(train, regions).with_format("numpy")
    assert len(attached) == NUM_TRAIN
    by_id = {str(image_id): row for row, image_id in enumerate(extracted["train"]["image_id"])}
    for row in attached.select(range(8)):
        original = extracted["train"][by_id[str(row["image_id"])]]
        np.testing.assert_array_equal(row["visual_feats"], original["visual_feats"])  # float32 stored exactly
        np.testing.assert_allclose(row["visual_pos"], original["visual_pos"], atol=1e-6)
        assert row["visual_attention_mask"].tolist() == [1] * 16


def test_run_vqa_lxmert_from_precomputed_features(region_files):
    files, _, folder = region_files
    output_dir = folder / "lxmert-from-tsv"
    log = _run_script(
        ["--output_dir", str(output_dir), "--max_steps", "2", "--region_features_path", str(files["train"]),
         "--eval_region_features_path", str(files["eval"]), *TINY_LXMERT_ARGS],
        folder / "cache",
    )  # fmt: skip
    assert "Region inputs: precomputed region columns; labels: index" in log, log[-3000:]
    assert re.search(rf"Test VQA accuracy \(test, {NUM_EVAL} questions\): [0-9.]+", log), log[-3000:]
    assert (output_dir / "model.safetensors").is_file() and RegionProcessor.is_saved_in(output_dir)
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert results["epoch"] == pytest.approx(2 * 8 / NUM_TRAIN)  # 2 steps of 8 questions


# --- (3) the pipeline: raw pixels and precomputed features ----------------------------------------------------------


@pytest.fixture(scope="module")
def trained_pipeline(raw_run):
    model = LxmertForQuestionAnswering.from_pretrained(raw_run[0]).eval()
    processor = RegionProcessor.from_pretrained(raw_run[0])
    return pipeline("vl-question-answering", model=model, processor=processor, device="cpu")


def test_pipeline_answers_from_raw_pixels_and_precomputed_features(trained_pipeline, region_files, splits, tmp_path):
    files, extracted, _ = region_files
    evaluation = splits[1]
    example = evaluation[0]
    question, image = example["question"], example["image"]
    top_k = len(EASY_VQA_ANSWERS)

    from_pixels = trained_pipeline(image=image, question=question, top_k=top_k)
    assert [entry["answer"] for entry in from_pixels][0] in EASY_VQA_ANSWERS
    assert {entry["answer"] for entry in from_pixels} == EASY_VQA_ANSWERS
    # LXMERT's QA head is single-label (cross-entropy): softmax scores over the answers
    assert sum(entry["score"] for entry in from_pixels) == pytest.approx(1.0, abs=1e-5)

    # regions read back from the TSV file, padded beyond the 16 grid cells (the padding is masked out)
    regions = load_region_features(files["eval"], max_regions=20, cache_dir=tmp_path).with_format("numpy")
    row = regions[region_feature_lookup(regions)[str(example["image_id"])]]
    assert row["visual_attention_mask"].tolist() == [1] * 16 + [0] * 4
    from_tsv = trained_pipeline(
        question=question, visual_feats=row["visual_feats"], visual_pos=row["visual_pos"],
        visual_attention_mask=row["visual_attention_mask"], top_k=top_k,
    )  # fmt: skip
    assert [entry["answer"] for entry in from_tsv] == [entry["answer"] for entry in from_pixels]
    for pixels_entry, tsv_entry in zip(from_pixels, from_tsv):
        assert tsv_entry["score"] == pytest.approx(pixels_entry["score"], abs=1e-5)

    # the same features as a dict input, and unpadded (extract_region_features columns), give the same answer
    as_dict = trained_pipeline({"question": question, "visual_feats": row["visual_feats"],
                                "visual_pos": row["visual_pos"], "visual_attention_mask": row["visual_attention_mask"]})
    assert as_dict[0]["answer"] == from_pixels[0]["answer"]
    column = extracted["eval"][[str(i) for i in extracted["eval"]["image_id"]].index(str(example["image_id"]))]
    unpadded = trained_pipeline(question=question, visual_feats=column["visual_feats"], visual_pos=column["visual_pos"])
    assert unpadded[0]["answer"] == from_pixels[0]["answer"]
    assert unpadded[0]["score"] == pytest.approx(from_pixels[0]["score"], abs=1e-5)

    # the pipeline's top score is the model's own softmax
    inputs = trained_pipeline.processor(images=image, text=question)
    with torch.no_grad():
        probabilities = trained_pipeline.model(**inputs).question_answering_score.softmax(-1)[0]
    assert from_pixels[0]["score"] == pytest.approx(probabilities.max().item(), abs=1e-6)


def test_pipeline_batches_of_regions(trained_pipeline, region_files):
    _, extracted, _ = region_files
    feats, pos = extracted["eval"]["visual_feats"][:3], extracted["eval"]["visual_pos"][:3]
    questions = ["what shape is it?", "is it red?", "what color is the shape?"]
    batched = trained_pipeline(question=questions, visual_feats=feats, visual_pos=pos, top_k=1, batch_size=3)
    one_by_one = [
        trained_pipeline(question=question, visual_feats=f, visual_pos=p, top_k=1)
        for question, f, p in zip(questions, feats, pos)
    ]
    assert [result[0]["answer"] for result in batched] == [result[0]["answer"] for result in one_by_one]


# --- pipeline rules and errors (tiny random LXMERT) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lxmert():
    torch.manual_seed(0)
    answers = sorted(EASY_VQA_ANSWERS)
    config = LxmertConfig(
        vocab_size=30522, hidden_size=32, l_layers=1, x_layers=1, r_layers=1, num_attention_heads=4,
        intermediate_size=37, visual_feat_dim=31, visual_pos_dim=4, num_qa_labels=len(answers),
        id2label=dict(enumerate(answers)), label2id={answer: i for i, answer in enumerate(answers)},
    )  # fmt: skip
    return LxmertForQuestionAnswering(config).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(local_pretrained_path("all-MiniLM-L6-v2"))


def test_single_label_rule(tiny_lxmert):
    assert is_single_label_qa_head(tiny_lxmert)  # the class decides, whatever problem_type says
    single = SimpleNamespace(config=SimpleNamespace(problem_type="single_label_classification"))
    multi = SimpleNamespace(config=SimpleNamespace(problem_type=None))
    assert is_single_label_qa_head(single) and not is_single_label_qa_head(multi)


def test_pipeline_checks_processor_and_answers(tiny_lxmert, tokenizer):
    with pytest.raises(ValueError, match="visual_feat_dim=31"):
        pipeline("vl-question-answering", model=tiny_lxmert, processor=RegionProcessor(tokenizer, feat_dim=64))
    with pytest.raises(ValueError, match="needs a `hf_vl.regions.RegionProcessor`"):
        pipeline("vl-question-answering", model=tiny_lxmert, processor=tokenizer)
    config = copy.deepcopy(tiny_lxmert.config)
    config.num_qa_labels = 5
    mislabelled = LxmertForQuestionAnswering(config)
    with pytest.raises(ValueError, match="5 answers .*`config.num_qa_labels`.* 13 entries"):
        pipeline("vl-question-answering", model=mislabelled, processor=RegionProcessor(tokenizer))


def test_pipeline_region_input_errors_and_sigmoid_override(tiny_lxmert, tokenizer):
    from PIL import Image

    vqa = pipeline("vl-question-answering", model=tiny_lxmert, processor=RegionProcessor(tokenizer), device="cpu")
    image = Image.new("RGB", (64, 64), "red")
    feats, pos = np.zeros((16, 31), np.float32), np.zeros((16, 4), np.float32)
    with pytest.raises(ValueError, match="either `image` or precomputed regions"):
        vqa(image=image, question="q?", visual_feats=feats, visual_pos=pos)
    with pytest.raises(ValueError, match="`visual_pos` is missing"):
        vqa(question="q?", visual_feats=feats)
    with pytest.raises(ValueError, match="feat_dim=31"):
        vqa(question="q?", visual_feats=feats[:, :8], visual_pos=pos)
    with pytest.raises(ValueError, match="3 questions"):
        vqa(question=["a?", "b?", "c?"], visual_feats=np.stack([feats, feats]), visual_pos=np.stack([pos, pos]))
    scores = vqa(image=image, question="what color?", top_k=13, function_to_apply="sigmoid")
    assert sum(entry["score"] for entry in scores) > 1.5  # independent sigmoids, not a distribution


def test_pipeline_save_pretrained_round_trip(tiny_lxmert, tokenizer, tmp_path):
    from PIL import Image

    vqa = pipeline("vl-question-answering", model=tiny_lxmert, processor=RegionProcessor(tokenizer), device="cpu")
    vqa.save_pretrained(tmp_path)
    reloaded = pipeline(
        "vl-question-answering", model=LxmertForQuestionAnswering.from_pretrained(tmp_path),
        processor=RegionProcessor.from_pretrained(tmp_path), device="cpu",
    )  # fmt: skip
    image = Image.new("RGB", (64, 64), "blue")
    expected, actual = vqa(image=image, question="what color?", top_k=3), reloaded(image=image, question="what color?", top_k=3)
    assert [entry["answer"] for entry in actual] == [entry["answer"] for entry in expected]
    # the same weights, up to float rounding (two model instances may take different CPU kernel paths)
    assert [entry["score"] for entry in actual] == pytest.approx([entry["score"] for entry in expected], abs=1e-6)
