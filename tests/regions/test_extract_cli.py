"""Tests of hf_vl.regions.extract: Dataset.map extraction with caching, writing files, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from region_extractor_test_utils import NUM_LABELS, tiny_yolos
from transformers import YolosImageProcessorPil

from hf_vl.data import load_easy_vqa
from hf_vl.regions.extract import (
    extract_region_features,
    iter_region_records,
    main,
    region_example_to_record,
    unique_images,
    write_region_features,
)
from hf_vl.regions.extractors import DetectorFeatureExtractor, GridFeatureExtractor

formats = pytest.importorskip("hf_vl.regions.formats")


@pytest.fixture(scope="module")
def easy_vqa_questions():
    """40 easy-VQA test questions (several per image), image column decoded to 64x64 RGB."""
    return load_easy_vqa("test", max_questions_per_split=40)


@pytest.fixture
def on_disk_questions(easy_vqa_questions, tmp_path):
    """The questions saved to and reloaded from disk, so ``Dataset.map`` writes cache files."""
    easy_vqa_questions.select(range(12)).save_to_disk(tmp_path / "questions")
    return datasets.load_from_disk(str(tmp_path / "questions"))


def region_feats(dataset: datasets.Dataset) -> np.ndarray:
    return dataset.with_format("numpy")[:]["visual_feats"]


class CountingGrid(GridFeatureExtractor):
    """A grid extractor that counts its forward calls (cache hits make none)."""

    calls = 0

    def forward(self, images, return_tensors="pt"):
        type(self).calls += 1
        return super().forward(images, return_tensors=return_tensors)


# --------------------------------------------------------------------------------------------------
# extract_region_features
# --------------------------------------------------------------------------------------------------


def test_extract_region_features_adds_columns(easy_vqa_questions):
    questions = easy_vqa_questions.select(range(10))
    extractor = GridFeatureExtractor(grid_size=(2, 2), add_global_region=True, pos_dim=5)
    with_regions = extract_region_features(questions, extractor, batch_size=4, desc=None)
    assert with_regions.num_rows == 10
    assert set(questions.column_names) < set(with_regions.column_names)
    assert isinstance(with_regions.features["visual_feats"], datasets.Array2D)
    assert with_regions.features["visual_feats"].shape == (5, extractor.feature_dim)
    rows = with_regions.with_format("torch")[:]
    assert rows["visual_feats"].shape == (10, 5, 31) and rows["visual_pos"].shape == (10, 5, 5)
    assert rows["visual_attention_mask"].dtype == torch.int64 and rows["visual_attention_mask"].eq(1).all()
    assert rows["image_width"].tolist() == [64] * 10 and rows["image_height"].tolist() == [64] * 10
    direct = extractor([questions[i]["image"] for i in range(10)])
    torch.testing.assert_close(rows["visual_feats"], direct["visual_feats"])
    torch.testing.assert_close(rows["visual_pos"], direct["visual_pos"])


def test_extraction_is_cached_by_extractor_fingerprint(on_disk_questions):
    CountingGrid.calls = 0
    first = extract_region_features(on_disk_questions, CountingGrid(projection_dim=16), batch_size=6, desc=None)
    assert CountingGrid.calls == 2  # 12 rows / batch_size 6
    assert first.cache_files and first.cache_files[0]["filename"] != on_disk_questions.cache_files[0]["filename"]

    # The same extractor (an equal, separately built one): served from the cache file, no forward.
    CountingGrid.calls = 0
    again = extract_region_features(on_disk_questions, CountingGrid(projection_dim=16), batch_size=6, desc=None)
    assert CountingGrid.calls == 0
    assert again.cache_files == first.cache_files
    np.testing.assert_array_equal(region_feats(again), region_feats(first))

    # Another seed (other weights) or other settings: recomputed into another cache file.
    for other in (CountingGrid(projection_dim=16, seed=1), CountingGrid(projection_dim=16, grid_size=2)):
        CountingGrid.calls = 0
        result = extract_region_features(on_disk_questions, other, batch_size=6, desc=None)
        assert CountingGrid.calls == 2
        assert result.cache_files != first.cache_files
    # Weights changed in place (fine-tuning) change the fingerprint too.
    tuned = CountingGrid(projection_dim=16)
    with torch.no_grad():
        tuned.projection.weight.mul_(2)
    CountingGrid.calls = 0
    doubled = extract_region_features(on_disk_questions, tuned, batch_size=6, desc=None)
    assert CountingGrid.calls == 2
    np.testing.assert_allclose(region_feats(doubled), 2 * region_feats(first), rtol=1e-5, atol=1e-6)


@pytest.mark.timeout(180)
def test_extraction_with_worker_processes(on_disk_questions):
    # Forked workers after the parent used torch's thread pool used to deadlock; they run single-threaded.
    extractor = GridFeatureExtractor(projection_dim=8)
    extractor(on_disk_questions[0]["image"])
    parallel = extract_region_features(on_disk_questions, extractor, batch_size=4, num_proc=2, desc=None)
    serial = extract_region_features(on_disk_questions, extractor, batch_size=4, desc=None, keep_in_memory=True)
    np.testing.assert_allclose(region_feats(parallel), region_feats(serial), rtol=1e-5, atol=1e-6)


def test_extract_with_detector_and_errors(easy_vqa_questions):
    questions = easy_vqa_questions.select(range(4))
    extractor = DetectorFeatureExtractor(tiny_yolos(), top_k=6, score_threshold=0.21, image_size=64)
    with_regions = extract_region_features(questions, extractor, batch_size=3, desc=None)
    rows = with_regions.with_format("numpy")[:]
    assert rows["cls_prob"].shape == (4, 6, NUM_LABELS + 1)
    assert rows["visual_feats"].shape == (4, 6, 32) and rows["object_conf"].shape == (4, 6)
    np.testing.assert_array_equal(rows["visual_attention_mask"], (rows["object_conf"] > 0).astype(np.int64))

    with pytest.raises(ValueError, match="image_column"):
        extract_region_features(questions, extractor, image_column="picture")
    with pytest.raises(ValueError, match="batch_size"):
        extract_region_features(questions, extractor, batch_size=0)
    with pytest.raises(TypeError, match="extractor"):
        extract_region_features(questions, object())
    broken = GridFeatureExtractor(projection_dim=4)
    with torch.no_grad():
        broken.projection.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        extract_region_features(questions, broken, desc=None)


# --------------------------------------------------------------------------------------------------
# records and files
# --------------------------------------------------------------------------------------------------


def test_write_region_features_tsv_and_npz_roundtrip(easy_vqa_questions, tmp_path):
    images = unique_images(easy_vqa_questions, max_images=5)
    assert len(set(images["image_id"])) == images.num_rows == 5
    extractor = GridFeatureExtractor(grid_size=(2, 2), pos_dim=5)
    with_regions = extract_region_features(images, extractor, desc=None)
    assert write_region_features(with_regions, tmp_path / "grid.tsv") == 5
    records = list(formats.read_tsv(tmp_path / "grid.tsv"))
    expected = with_regions.with_format("numpy")
    assert [record["image_id"] for record in records] == [str(i) for i in expected["image_id"]]
    for record, row in zip(records, expected):
        assert (record["image_width"], record["image_height"], record["num_boxes"]) == (64, 64, 4)
        np.testing.assert_allclose(record["boxes"], row["visual_pos"][:, :4] * 64, atol=1e-4)
        np.testing.assert_array_equal(record["features"], row["visual_feats"])

    assert write_region_features(with_regions, tmp_path / "npz", format="npz") == 5
    npz_record = formats.read_npz(tmp_path / "npz" / f"{records[0]['image_id']}.npz")
    np.testing.assert_array_equal(npz_record["features"], records[0]["features"])
    # Read back as model inputs: the same normalised boxes.
    loaded = formats.load_region_features(str(tmp_path / "grid.tsv"), max_regions=4, pos_dim=5).with_format("numpy")
    np.testing.assert_allclose(loaded[0]["visual_pos"], expected[0]["visual_pos"], atol=1e-5)


def test_detector_records_drop_padding_and_global_region(tmp_path):
    extractor = DetectorFeatureExtractor(
        tiny_yolos(), top_k=6, score_threshold=0.207, add_global_region=True, image_size=64
    )  # fmt: skip
    rng = np.random.default_rng(0)
    examples = [{"image": rng.integers(0, 256, (48, 80, 3), dtype=np.uint8), "image_id": f"img{i}"} for i in range(3)]
    records = list(iter_region_records(examples, extractor, batch_size=2))
    batch = extractor([example["image"] for example in examples])
    for index, record in enumerate(records):
        keep = batch["visual_attention_mask"][index].bool().clone()
        keep[0] = False  # the global region is not written
        assert record["num_boxes"] == int(keep.sum()) >= 1
        assert (record["image_width"], record["image_height"]) == (80, 48)
        np.testing.assert_allclose(
            record["boxes"], batch["visual_pos"][index][keep].numpy() * [80, 48, 80, 48], rtol=1e-5, atol=1e-4
        )
        np.testing.assert_array_equal(record["features"], batch["visual_feats"][index][keep].numpy())
        assert record["cls_prob"].shape == (record["num_boxes"], NUM_LABELS + 1)
    assert write_region_features(records, tmp_path / "det.tsv", layout="legacy") == 3
    read_back = list(formats.read_tsv(tmp_path / "det.tsv"))
    np.testing.assert_array_equal(read_back[1]["cls_prob"], records[1]["cls_prob"])
    # One name for the class distribution: the extractor's output key is the column the file reader gives back.
    loaded = formats.load_region_features(str(tmp_path / "det.tsv"), max_regions=6)
    assert "cls_prob" in batch and "cls_prob" in loaded.column_names and "cls_probs" not in batch
    row = loaded.with_format("numpy")[1]
    np.testing.assert_allclose(row["cls_prob"][: records[1]["num_boxes"]], records[1]["cls_prob"], rtol=1e-6)


def test_record_errors_name_the_image():
    example = {
        "image_id": 7, "image_width": 64, "image_height": 64,
        "visual_feats": np.ones((2, 3), np.float32), "visual_pos": np.array([[0, 0, 0.5, 0.5], [0.5, 0.5, 1.2, 1.0]]),
        "visual_attention_mask": np.array([1, 1]),
    }  # fmt: skip
    with pytest.raises(ValueError, match="image 7: visual_pos box .* outside the image"):
        region_example_to_record(example)
    # A padded region is not checked (nor written).
    assert region_example_to_record({**example, "visual_attention_mask": np.array([1, 0])})["num_boxes"] == 1
    nan_feats = np.ones((2, 3), np.float32)
    nan_feats[0, 1] = np.nan
    with pytest.raises(ValueError, match="image 7: visual_feats contain NaN"):
        region_example_to_record({**example, "visual_feats": nan_feats, "visual_pos": np.zeros((2, 4))})
    with pytest.raises(ValueError, match="drop_global_region"):
        region_example_to_record({**example, "visual_pos": np.zeros((2, 4))}, drop_global_region=True)
    with pytest.raises(ValueError, match="format"):
        write_region_features([], "out.h5", format="h5")


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------


def test_cli_grid_on_easy_vqa_end_to_end(tmp_path):
    output = tmp_path / "features.tsv"
    command = [
        sys.executable, "-m", "hf_vl.regions.extract", "--dataset", "easy-vqa", "--split", "test",
        "--extractor", "grid", "--grid-size", "2", "3", "--image-size", "64", "--pos-dim", "5",
        "--output", str(output), "--format", "tsv", "--max-images", "6", "--batch-size", "4",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote 6 images" in result.stdout
    records = list(formats.read_tsv(output))
    assert [record["image_id"] for record in records] == [str(i) for i in range(6)]  # one per image, not per question
    for record in records:
        assert (record["image_width"], record["image_height"], record["num_boxes"]) == (64, 64, 6)
        assert record["features"].shape == (6, 31)
    np.testing.assert_allclose(records[0]["boxes"][1], [64 / 3, 0, 128 / 3, 32], atol=1e-3)
    # The same features as the library call on those images.
    images = unique_images(load_easy_vqa("test"), max_images=6)
    expected = GridFeatureExtractor(grid_size=(2, 3), image_size=64)([images[i]["image"] for i in range(6)])
    np.testing.assert_allclose(records[5]["features"], expected["visual_feats"][5].numpy(), atol=1e-6)


def test_cli_detector_to_npz_in_process(tmp_path, capsys):
    detector_dir = tmp_path / "yolos"
    tiny_yolos().save_pretrained(detector_dir)
    YolosImageProcessorPil(size={"height": 64, "width": 64}, do_pad=False).save_pretrained(detector_dir)
    output = tmp_path / "npz_out"
    status = main([
        "--dataset", "easy-vqa", "--split", "test", "--detector", str(detector_dir), "--top-k", "5",
        "--output", str(output), "--format", "npz", "--max-images", "3",
        "--save-extractor", str(tmp_path / "saved_extractor"),
    ])  # fmt: skip
    assert status == 0 and "wrote 3 images" in capsys.readouterr().out
    records = list(formats.iter_npz_dir(output)) if hasattr(formats, "iter_npz_dir") else []
    assert sorted(record["image_id"] for record in records) == ["0", "1", "2"]
    assert all(record["num_boxes"] == 5 and record["features"].shape == (5, 32) for record in records)
    # The saved extractor reproduces the run through `--extractor PATH`.
    saved = str(tmp_path / "saved_extractor")
    main(["--extractor", saved, "--max-images", "3", "--output", str(tmp_path / "again.tsv")])
    again = {record["image_id"]: record for record in formats.read_tsv(tmp_path / "again.tsv")}
    for record in records:
        np.testing.assert_allclose(again[record["image_id"]]["features"], record["features"], atol=1e-5)
