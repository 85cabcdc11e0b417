"""Region-feature files: the original TSV layouts, .npz files, datasets loading and joining to VQA data."""

from __future__ import annotations

import base64
import logging
import pickle

import datasets
import numpy as np
import pytest
from region_tsv_helpers import (
    LXMERT_FIELDNAMES,
    b64,
    legacy_row,
    load_obj_tsv_like_lxmert,
    lxmert_line,
    make_record,
    write_legacy_tsv_like_original,
    write_lxmert_tsv_like_original,
    write_raw_lines,
)

from hf_vl.regions import (
    FIELDNAMES,
    LEGACY_FIELDNAMES,
    RegionFeatureError,
    attach_region_features,
    iter_npz_dir,
    load_region_features,
    read_npz,
    read_tsv,
    region_feature_lookup,
    write_npz,
    write_tsv,
)

RECORD_ARRAY_KEYS = ("boxes", "features", "object_ids", "object_conf", "attr_ids", "attr_conf")


def assert_same_record(actual: dict, expected: dict, keys=RECORD_ARRAY_KEYS) -> None:
    assert actual["image_id"] == expected["image_id"] and isinstance(actual["image_id"], str)
    assert (actual["image_width"], actual["image_height"]) == (expected["image_width"], expected["image_height"])
    assert actual["num_boxes"] == expected["num_boxes"]
    for key in keys:
        assert actual[key].dtype == expected[key].dtype, key
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


@pytest.fixture
def records():
    return [
        make_record("COCO_val2014_000000000042", 3, seed=1),
        make_record("COCO_val2014_000000000073", 2, width=500, height=375, seed=2),
        make_record("COCO_val2014_000000000074", 4, width=427, height=640, seed=3),
    ]


# --------------------------------------------------------------------------------------------------
# reading the original layouts
# --------------------------------------------------------------------------------------------------


def test_field_names_match_the_original_code():
    assert FIELDNAMES == LXMERT_FIELDNAMES
    assert LEGACY_FIELDNAMES == ["image_id", "image_w", "image_h", "num_boxes", "boxes", "features"]


def test_read_lxmert_tsv_written_like_py_bottom_up_attention(tmp_path, records):
    path = tmp_path / "val2014_obj36.tsv"
    write_lxmert_tsv_like_original(path, records)
    assert b"\r\n" in path.read_bytes()  # csv.DictWriter's line ends, as the original files
    read = list(read_tsv(path))
    assert len(read) == 3
    for actual, expected in zip(read, records):
        assert_same_record(actual, expected)
        assert actual["features"].flags.writeable


def test_read_legacy_tsv_width_before_height(tmp_path, records):
    path = tmp_path / "trainval_resnet101_faster_rcnn_genome.tsv.0"
    write_legacy_tsv_like_original(path, records)
    read = list(read_tsv(path))
    for actual, expected in zip(read, records):
        assert_same_record(actual, expected, keys=("boxes", "features"))
        assert "object_ids" not in actual and "cls_prob" not in actual
    assert (read[2]["image_width"], read[2]["image_height"]) == (427, 640)


def test_read_legacy_tsv_with_cls_prob(tmp_path):
    records = [make_record("1", 3, cls_dim=5, seed=4), make_record("2", 1, cls_dim=5, seed=5)]
    path = tmp_path / "cc_cls_prob.tsv"
    write_legacy_tsv_like_original(path, records, with_cls_prob=True)
    read = list(read_tsv(path))
    for actual, expected in zip(read, records):
        assert_same_record(actual, expected, keys=("boxes", "features", "cls_prob"))
        assert actual["cls_prob"].shape == (expected["num_boxes"], 5)


def test_header_line_is_accepted_and_counts_as_line_one(tmp_path, records):
    path = tmp_path / "with_header.tsv"
    bad = lxmert_line(records[1], features="!!!not base64!!!")
    write_raw_lines(path, ["\t".join(FIELDNAMES), lxmert_line(records[0]), bad])
    iterator = read_tsv(path)
    assert_same_record(next(iterator), records[0])
    with pytest.raises(RegionFeatureError) as info:
        next(iterator)
    assert (info.value.line, info.value.field) == (3, "features")

    legacy_path = tmp_path / "legacy_header.tsv"
    row = legacy_row(records[0])
    row_line = "\t".join(str(row[name]) for name in LEGACY_FIELDNAMES)
    write_raw_lines(legacy_path, ["\t".join(LEGACY_FIELDNAMES), row_line])
    (only,) = read_tsv(legacy_path)
    assert_same_record(only, records[0], keys=("boxes", "features"))


def test_explicit_fieldnames_for_an_unusual_column_order(tmp_path, records):
    fieldnames = ["image_id", "image_h", "image_w", "num_boxes", "boxes", "features", "title"]
    row = legacy_row(records[0])
    path = tmp_path / "custom.tsv"
    write_raw_lines(path, ["\t".join([str(row[name]) for name in fieldnames[:-1]] + ["a caption"])])
    (record,) = read_tsv(path, fieldnames=fieldnames)
    assert_same_record(record, records[0], keys=("boxes", "features"))
    with pytest.raises(ValueError, match="fieldnames"):
        read_tsv(path, fieldnames=["image_id", "boxes"])


def test_fields_larger_than_the_csv_default_limit(tmp_path):
    record = make_record("big", 36, feature_dim=1024, seed=6)
    path = tmp_path / "big.tsv"
    write_lxmert_tsv_like_original(path, [record])
    assert len(b64(record["features"])) > 131072  # csv's default field_size_limit
    (read,) = read_tsv(path, feature_dim=1024)
    assert_same_record(read, record)


def test_python3_bytes_repr_fields_are_decoded(tmp_path, records):
    path = tmp_path / "bytes_repr.tsv"
    wrapped = "b'" + b64(records[0]["features"]) + "'"
    write_raw_lines(path, [lxmert_line(records[0], features=wrapped)])
    (read,) = read_tsv(path)
    np.testing.assert_array_equal(read["features"], records[0]["features"])


def test_images_without_boxes(tmp_path):
    record = make_record("empty", 0, seed=7)
    path = tmp_path / "empty.tsv"
    write_lxmert_tsv_like_original(path, [record, make_record("full", 2, seed=8)])
    empty, full = read_tsv(path, feature_dim=8)
    assert empty["num_boxes"] == 0 and empty["features"].shape == (0, 8) and empty["boxes"].shape == (0, 4)
    assert full["features"].shape == (2, 8)


# --------------------------------------------------------------------------------------------------
# corrupt rows: file, line, field
# --------------------------------------------------------------------------------------------------


def _corrupt_field(record: dict) -> dict[str, dict]:
    """Named corruptions of one LXMERT row -> overrides of its columns."""
    n = record["num_boxes"]
    outside = record["boxes"].copy()
    outside[1, 2] = record["image_width"] + 50
    flipped = record["boxes"].copy()
    flipped[0, [0, 2]] = flipped[0, [2, 0]]
    nan_features = record["features"].copy()
    nan_features[2, 3] = np.nan
    return {
        "bad_base64": ({"features": "@@@@"}, "features"),
        "bytes_not_float32": ({"features": base64.b64encode(b"1234567").decode()}, "features"),
        "features_not_divisible": ({"features": b64(np.zeros(3 * 8 + 1, np.float32))}, "features"),
        "boxes_count": ({"boxes": b64(record["boxes"][:2])}, "boxes"),
        "objects_id_count": ({"objects_id": b64(record["object_ids"][:1])}, "objects_id"),
        "attrs_conf_wrong_dtype_size": ({"attrs_conf": b64(np.zeros(n, np.float64))}, "attrs_conf"),
        "num_boxes_not_int": ({"num_boxes": "three"}, "num_boxes"),
        "img_h_not_int": ({"img_h": "4x0"}, "img_h"),
        "img_w_zero": ({"img_w": "0"}, "img_w"),
        "nan_features": ({"features": b64(nan_features)}, "features"),
        "box_outside_image": ({"boxes": b64(outside)}, "boxes"),
        "box_x2_before_x1": ({"boxes": b64(flipped)}, "boxes"),
    }


CORRUPTIONS = list(_corrupt_field(make_record("x", 3, seed=0)))


@pytest.mark.parametrize("corruption", CORRUPTIONS)
@pytest.mark.parametrize("bad_line", [1, 3])
def test_corrupt_row_names_file_line_and_field(tmp_path, corruption, bad_line):
    good = [make_record(f"img{i}", 3, seed=10 + i) for i in range(4)]
    overrides, field = _corrupt_field(good[bad_line - 1])[corruption]
    lines = [lxmert_line(record) for record in good]
    lines[bad_line - 1] = lxmert_line(good[bad_line - 1], **overrides)
    path = tmp_path / "corrupt.tsv"
    write_raw_lines(path, lines)
    with pytest.raises(RegionFeatureError) as info:
        list(read_tsv(path))
    error = info.value
    assert isinstance(error, ValueError)
    assert (error.line, error.field) == (bad_line, field)
    assert str(path) in str(error) and f"line {bad_line}," in str(error) and f"'{field}'" in str(error)


def test_box_details_in_the_message(tmp_path):
    record = make_record("img", 3, seed=3)
    overrides, _ = _corrupt_field(record)["box_outside_image"]
    path = tmp_path / "outside.tsv"
    write_raw_lines(path, [lxmert_line(record, **overrides)])
    with pytest.raises(RegionFeatureError, match=r"boxes\[1\].*outside the 640x480 image"):
        list(read_tsv(path))


@pytest.mark.parametrize(
    "line, field",
    [("drop_last", "features"), ("extra_column", "columns")],
)
def test_wrong_column_count(tmp_path, line, field):
    good = [make_record(f"img{i}", 2, seed=i) for i in range(3)]
    lines = [lxmert_line(record) for record in good]
    columns = lines[1].split("\t")
    lines[1] = "\t".join(columns[:-1] if line == "drop_last" else columns + ["extra"])
    path = tmp_path / "columns.tsv"
    write_raw_lines(path, lines)
    with pytest.raises(RegionFeatureError, match="expected 10 tab-separated columns") as info:
        list(read_tsv(path))
    assert (info.value.line, info.value.field) == (2, field)


def test_unknown_layout_and_legacy_fields(tmp_path):
    path = tmp_path / "nine.tsv"
    write_raw_lines(path, ["\t".join(["a"] * 9)])
    with pytest.raises(RegionFeatureError, match="match no known layout") as info:
        list(read_tsv(path))
    assert (info.value.line, info.value.field) == (1, "columns")

    record = make_record("1", 2, seed=1)
    row = {key: str(value) for key, value in legacy_row(record).items()}
    rows = [dict(row), dict(row, image_w="-5")]
    legacy_path = tmp_path / "legacy_bad.tsv"
    write_raw_lines(legacy_path, ["\t".join(r[name] for name in LEGACY_FIELDNAMES) for r in rows])
    with pytest.raises(RegionFeatureError) as info:
        list(read_tsv(legacy_path))
    assert (info.value.line, info.value.field) == (2, "image_w")


def test_feature_dim_mismatch(tmp_path):
    path = tmp_path / "dims.tsv"
    write_lxmert_tsv_like_original(path, [make_record("a", 2, feature_dim=8), make_record("b", 2, feature_dim=4)])
    with pytest.raises(RegionFeatureError, match="feature dimension 4, expected feature_dim=8") as info:
        list(read_tsv(path, feature_dim=8))
    assert (info.value.line, info.value.field) == (2, "features")


def test_on_error_warn_skips_and_logs(tmp_path, caplog):
    good = [make_record(f"img{i}", 2, seed=i) for i in range(3)]
    lines = [lxmert_line(record) for record in good]
    lines[1] = lxmert_line(good[1], features="@@")
    path = tmp_path / "warn.tsv"
    write_raw_lines(path, lines)
    with caplog.at_level(logging.WARNING, logger="hf_vl.regions.formats"):
        read = list(read_tsv(path, on_error="warn"))
    assert [record["image_id"] for record in read] == ["img0", "img2"]
    assert "line 2, field 'features'" in caplog.text
    with pytest.raises(ValueError, match="on_error"):
        read_tsv(path, on_error="ignore")


def test_reading_is_lazy(tmp_path):
    good = make_record("first", 2, seed=1)
    path = tmp_path / "lazy.tsv"
    write_raw_lines(path, [lxmert_line(good), "garbage\tline", lxmert_line(good, boxes="@@")])
    iterator = read_tsv(path)
    assert next(iterator)["image_id"] == "first"
    with pytest.raises(RegionFeatureError) as info:
        next(iterator)
    assert info.value.line == 2


def test_region_feature_error_pickles():
    error = RegionFeatureError("a.tsv", "boxes", "bad", line=4)
    restored = pickle.loads(pickle.dumps(error))
    assert str(restored) == str(error) == "a.tsv, line 4, field 'boxes': bad"
    assert (restored.line, restored.field) == (4, "boxes")


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------


def test_write_lxmert_round_trip_and_original_reader(tmp_path, records):
    path = tmp_path / "written.tsv"
    assert write_tsv(path, iter(records)) == 3
    for actual, expected in zip(read_tsv(path), records):
        assert_same_record(actual, expected)
    # LXMERT's own reader gets the same arrays out of our file.
    for item, expected in zip(load_obj_tsv_like_lxmert(path), records):
        assert item["img_id"] == expected["image_id"]
        assert (item["img_h"], item["img_w"]) == (expected["image_height"], expected["image_width"])
        np.testing.assert_array_equal(item["features"], expected["features"])
        np.testing.assert_array_equal(item["boxes"], expected["boxes"])
        np.testing.assert_array_equal(item["objects_id"], expected["object_ids"])


def test_write_fills_missing_object_columns_with_zeros(tmp_path):
    record = make_record("a", 3, seed=1)
    minimal = {key: record[key] for key in ("image_id", "image_width", "image_height", "boxes", "features")}
    path = tmp_path / "minimal.tsv"
    write_tsv(path, [minimal], header=True)
    write_tsv(path, [dict(minimal, image_id="b")], header=True, append=True)  # no second header
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == FIELDNAMES and len(lines) == 3
    read, _ = read_tsv(path)
    np.testing.assert_array_equal(read["object_ids"], np.zeros(3, np.int64))
    np.testing.assert_array_equal(read["attr_conf"], np.zeros(3, np.float32))
    np.testing.assert_array_equal(read["features"], record["features"])


def test_write_legacy_with_cls_prob_and_append(tmp_path):
    records = [make_record(str(i), 2 + i, cls_dim=4, seed=i) for i in range(3)]
    path = tmp_path / "legacy.tsv"
    write_tsv(path, records[:2], layout="legacy")
    write_tsv(path, records[2:], layout="legacy", append=True)
    assert len(path.read_text().splitlines()[0].split("\t")) == 7
    read = list(read_tsv(path))
    for actual, expected in zip(read, records):
        assert_same_record(actual, expected, keys=("boxes", "features", "cls_prob"))
    with pytest.raises(ValueError, match=r"records\[1\].*'cls_prob'.*first record"):
        write_tsv(tmp_path / "mixed.tsv", [records[0], make_record("no_cls", 2)], layout="legacy")
    with pytest.raises(ValueError, match="layout"):
        write_tsv(path, records, layout="vinvl")


def test_write_streams_and_reports_the_bad_record(tmp_path):
    good = (make_record(f"img{i}", 2, seed=i) for i in range(2))
    bad = make_record("bad", 2, seed=9)
    bad["boxes"] = bad["boxes"] + 10_000

    def records():
        yield from good
        yield bad

    path = tmp_path / "stream.tsv"
    with pytest.raises(ValueError, match=r"records\[2\] \(image_id 'bad'\) field 'boxes'"):
        write_tsv(path, records())
    assert [record["image_id"] for record in read_tsv(path)] == ["img0", "img1"]
    torch = pytest.importorskip("torch")
    record = make_record("tensors", 2, seed=1)
    as_tensors = dict(record, features=torch.from_numpy(record["features"]), boxes=torch.from_numpy(record["boxes"]))
    write_tsv(path, [as_tensors])
    assert_same_record(next(read_tsv(path)), record)
    with pytest.raises(ValueError, match="tabs"):
        write_tsv(path, [dict(record, image_id="a\tb")])


# --------------------------------------------------------------------------------------------------
# per-image .npz
# --------------------------------------------------------------------------------------------------


def test_npz_round_trip_and_tsv_conversion(tmp_path, records):
    records[0]["cls_prob"] = np.full((3, 4), 0.25, np.float32)
    out_dir = tmp_path / "npz"
    out_dir.mkdir()
    for record in records:
        written = write_npz(out_dir / record["image_id"], record)
        assert written.endswith(".npz")
    with np.load(out_dir / f"{records[1]['image_id']}.npz") as raw:
        assert raw["features"].dtype == np.float32 and raw["boxes"].shape == (2, 4)
        assert int(raw["image_width"]) == 500
    back = list(iter_npz_dir(out_dir))
    assert [r["image_id"] for r in back] == sorted(r["image_id"] for r in records)
    for actual, expected in zip(back, records):
        assert_same_record(actual, expected)
    np.testing.assert_array_equal(back[0]["cls_prob"], records[0]["cls_prob"])
    # npz -> TSV -> records is lossless
    write_tsv(tmp_path / "from_npz.tsv", iter_npz_dir(out_dir))
    for actual, expected in zip(read_tsv(tmp_path / "from_npz.tsv"), records):
        assert_same_record(actual, expected)


def test_read_npz_of_bottom_up_attention_pytorch(tmp_path):
    record = make_record("000000000042", 3, seed=2)
    info = {"objects_id": record["object_ids"], "objects_conf": record["object_conf"], "image_h": 480}
    path = tmp_path / "000000000042.npz"
    np.savez_compressed(
        path, x=record["features"], bbox=record["boxes"], num_bbox=3, image_h=480, image_w=640, info=info
    )
    plain = read_npz(path)  # no pickle: info is left alone
    assert_same_record(plain, record, keys=("boxes", "features"))
    assert "object_ids" not in plain
    trusted = read_npz(path, allow_pickle=True)
    np.testing.assert_array_equal(trusted["object_ids"], record["object_ids"])


def test_corrupt_npz_names_file_and_field(tmp_path):
    record = make_record("a", 3, seed=1)
    path = tmp_path / "a.npz"
    np.savez(path, features=record["features"], boxes=record["boxes"][:2], image_width=640, image_height=480)
    with pytest.raises(RegionFeatureError, match="field 'boxes'") as info:
        read_npz(path)
    assert info.value.path == str(path) and info.value.line is None
    np.savez(path, boxes=record["boxes"], image_width=640, image_height=480)
    with pytest.raises(RegionFeatureError, match="field 'features': is missing"):
        read_npz(path)
    nan = record["features"].copy()
    nan[0, 0] = np.inf
    with pytest.raises(RegionFeatureError, match="field 'features'"):
        write_npz(tmp_path / "b", dict(record, features=nan))


# --------------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------------


def test_load_region_features_shapes_padding_and_positions(tmp_path, records):
    path = tmp_path / "regions.tsv"
    write_lxmert_tsv_like_original(path, records)
    dataset = load_region_features(path, max_regions=3, keep_boxes=True, cache_dir=tmp_path / "cache")
    assert isinstance(dataset, datasets.Dataset) and len(dataset) == 3
    assert dataset.features["visual_feats"] == datasets.Array2D((3, 8), "float32")
    rows = dataset.with_format("numpy")
    batch = rows[:]
    assert batch["visual_feats"].shape == (3, 3, 8) and batch["visual_pos"].shape == (3, 3, 4)
    assert batch["visual_feats"].dtype == np.float32 and batch["visual_attention_mask"].dtype == np.int64
    np.testing.assert_array_equal(batch["visual_attention_mask"], [[1, 1, 1], [1, 1, 0], [1, 1, 1]])
    # padding is zeros; truncation keeps the first regions
    row1 = rows[1]
    np.testing.assert_array_equal(row1["visual_feats"][:2], records[1]["features"])
    assert not row1["visual_feats"][2].any() and not row1["visual_pos"][2].any()
    np.testing.assert_array_equal(rows[2]["visual_feats"], records[2]["features"][:3])
    # boxes normalised by the image size, x by the width and y by the height
    expected_pos = records[1]["boxes"] / np.array([500, 375, 500, 375], np.float32)
    np.testing.assert_allclose(row1["visual_pos"][:2], expected_pos, rtol=1e-6)
    np.testing.assert_array_equal(row1["boxes"][:2], records[1]["boxes"])
    assert dataset[0]["image_id"] == records[0]["image_id"] and dataset[1]["image_width"] == 500


def test_load_region_features_global_region_and_area(tmp_path):
    records = [make_record("a", 2, cls_dim=3, seed=1), make_record("b", 5, cls_dim=3, seed=2)]
    path = tmp_path / "volta.tsv"
    write_legacy_tsv_like_original(path, records, with_cls_prob=True)
    dataset = load_region_features(path, pos_dim=5, add_global=True, max_regions=4, cache_dir=tmp_path / "c")
    rows = dataset.with_format("numpy")
    first = rows[0]
    np.testing.assert_allclose(first["visual_feats"][0], records[0]["features"].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(first["visual_pos"][0], [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(first["visual_attention_mask"], [1, 1, 1, 0])
    boxes = records[0]["boxes"] / np.array([640, 480, 640, 480], np.float32)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    np.testing.assert_allclose(first["visual_pos"][1:3, 4], area, rtol=1e-5)
    np.testing.assert_array_equal(first["cls_prob"][0], 0)  # the global region has no class distribution
    np.testing.assert_array_equal(first["cls_prob"][1:3], records[0]["cls_prob"])
    # the global region counts within max_regions and is the mean of ALL boxes (VOLTA)
    second = rows[1]
    np.testing.assert_allclose(second["visual_feats"][0], records[1]["features"].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(second["visual_feats"][1:], records[1]["features"][:3])
    np.testing.assert_array_equal(second["visual_attention_mask"], [1, 1, 1, 1])


def test_load_region_features_streaming_is_lazy(tmp_path, records):
    path = tmp_path / "stream.tsv"
    lines = [lxmert_line(records[0]), lxmert_line(records[1]), lxmert_line(records[2], features="@@")]
    write_raw_lines(path, lines)
    streamed = load_region_features(path, streaming=True, max_regions=4)
    assert isinstance(streamed, datasets.IterableDataset)
    iterator = iter(streamed)
    first = next(iterator)
    assert first["image_id"] == records[0]["image_id"]
    np.testing.assert_array_equal(np.asarray(first["visual_feats"])[:3], records[0]["features"])
    assert next(iterator)["image_id"] == records[1]["image_id"]
    with pytest.raises(RegionFeatureError) as info:
        next(iterator)
    assert (info.value.line, info.value.field) == (3, "features")
    with pytest.raises(RegionFeatureError):  # building the whole dataset meets the bad row too
        load_region_features(path, max_regions=4, cache_dir=tmp_path / "cache")


def test_load_region_features_from_npz_dir_and_mixed_sources(tmp_path, records):
    npz_dir = tmp_path / "npz"
    npz_dir.mkdir()
    for record in records[:2]:
        write_npz(npz_dir / record["image_id"], record)
    tsv = tmp_path / "rest.tsv.0"
    write_tsv(tsv, records[2:])
    dataset = load_region_features([npz_dir, tsv], max_regions=5, cache_dir=tmp_path / "cache")
    assert dataset["image_id"][:] == [record["image_id"] for record in records]
    streamed = list(load_region_features([npz_dir, tsv], streaming=True, max_regions=5))
    np.testing.assert_array_equal(
        np.asarray(streamed[2]["visual_feats"]), dataset.with_format("numpy")[2]["visual_feats"]
    )
    (tmp_path / "x.bin").write_text("")
    with pytest.raises(ValueError, match="cannot detect the format"):
        load_region_features(tmp_path / "x.bin")
    with pytest.raises(FileNotFoundError):
        load_region_features(tmp_path / "missing.tsv")
    with pytest.raises(ValueError, match="pos_dim"):
        load_region_features(tsv, pos_dim=6)


def test_cache_is_invalidated_when_the_file_changes(tmp_path, records):
    path = tmp_path / "changing.tsv"
    write_tsv(path, records[:1])
    assert len(load_region_features(path, cache_dir=tmp_path / "cache")) == 1
    write_tsv(path, records)
    assert len(load_region_features(path, cache_dir=tmp_path / "cache")) == 3


def test_lookup_and_attach_to_a_vqa_dataset(tmp_path, records):
    path = tmp_path / "regions.tsv"
    write_tsv(path, records)
    regions = load_region_features(path, max_regions=4, cache_dir=tmp_path / "cache")
    lookup = region_feature_lookup(regions)
    assert lookup == {record["image_id"]: index for index, record in enumerate(records)}

    vqa = datasets.Dataset.from_dict(
        {"question": ["q0", "q1", "q2", "q3"], "image_id": [73, 42, 73, 74], "label": [0, 1, 2, 3]}
    )
    joined = attach_region_features(vqa, regions, image_id_fn=lambda i: f"COCO_val2014_{i:012d}", batch_size=3)
    assert joined.column_names == [
        "question", "image_id", "label", "visual_feats", "visual_pos", "visual_attention_mask"
    ]
    assert joined.features["visual_feats"] == regions.features["visual_feats"]
    rows = joined.with_format("numpy")
    region_rows = regions.with_format("numpy")
    for row, image_index in zip(range(4), [1, 0, 1, 2]):
        for column in ("visual_feats", "visual_pos", "visual_attention_mask"):
            np.testing.assert_array_equal(rows[row][column], region_rows[image_index][column])
    assert joined["question"][:] == ["q0", "q1", "q2", "q3"]

    with pytest.raises(ValueError, match=r"image_id 99 .* has no region features"):
        attach_region_features(vqa.select([0]).map(lambda x: {"image_id": 99}), regions)
    with pytest.raises(ValueError, match="image_id_column 'img'"):
        attach_region_features(vqa, regions, image_id_column="img")


def test_lookup_rejects_duplicate_ids(tmp_path, records):
    path = tmp_path / "dup.tsv"
    write_tsv(path, [records[0], records[1], records[0]])
    regions = load_region_features(path, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match=r"occurs twice.*rows 0 and 2"):
        region_feature_lookup(regions)
