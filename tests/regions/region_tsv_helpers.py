"""Helpers of the region-feature tests: records, and TSV files written / read exactly as the originals do.

``write_lxmert_tsv_like_original`` follows airsplay/py-bottom-up-attention (``csv.DictWriter`` with its
default ``\\r\\n`` line ends, ``base64.b64encode(array).decode()`` per field); ``load_obj_tsv_like_lxmert``
follows airsplay/lxmert ``src/utils.py``; ``write_legacy_tsv_like_original`` follows
peteanderson80/bottom-up-attention ``tools/generate_tsv.py`` (Python 3 spelling of its ``b64encode``).
"""

from __future__ import annotations

import base64
import csv
import sys

import numpy as np

LXMERT_FIELDNAMES = ["img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf",
                     "num_boxes", "boxes", "features"]  # fmt: skip
ORIGINAL_LEGACY_FIELDNAMES = ["image_id", "image_w", "image_h", "num_boxes", "boxes", "features"]


def make_record(image_id: str, num_boxes: int, feature_dim: int = 8, width: int = 640, height: int = 480,
                seed: int = 0, cls_dim: int | None = None) -> dict:
    """A valid record in the dict format of ``read_tsv`` (boxes inside the image)."""
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(0, width / 2, num_boxes)
    y1 = rng.uniform(0, height / 2, num_boxes)
    x2 = x1 + rng.uniform(1, width / 2, num_boxes)
    y2 = y1 + rng.uniform(1, height / 2, num_boxes)
    record = {
        "image_id": image_id,
        "image_width": width,
        "image_height": height,
        "num_boxes": num_boxes,
        "boxes": np.stack([x1, y1, x2, y2], axis=1).astype(np.float32),
        "features": rng.standard_normal((num_boxes, feature_dim)).astype(np.float32),
        "object_ids": rng.integers(0, 1600, num_boxes).astype(np.int64),
        "object_conf": rng.uniform(0, 1, num_boxes).astype(np.float32),
        "attr_ids": rng.integers(0, 400, num_boxes).astype(np.int64),
        "attr_conf": rng.uniform(0, 1, num_boxes).astype(np.float32),
    }
    if cls_dim is not None:
        cls_prob = rng.uniform(0, 1, (num_boxes, cls_dim)).astype(np.float32)
        record["cls_prob"] = cls_prob / cls_prob.sum(axis=1, keepdims=True)
    return record


def b64(array: np.ndarray) -> str:
    return base64.b64encode(array).decode()


def lxmert_row(record: dict) -> dict:
    """The row dict py-bottom-up-attention hands to ``csv.DictWriter``."""
    return {
        "img_id": record["image_id"],
        "img_h": record["image_height"],
        "img_w": record["image_width"],
        "objects_id": b64(record["object_ids"]),  # int64
        "objects_conf": b64(record["object_conf"]),  # float32
        "attrs_id": b64(record["attr_ids"]),  # int64
        "attrs_conf": b64(record["attr_conf"]),  # float32
        "num_boxes": record["num_boxes"],
        "boxes": b64(record["boxes"]),  # float32
        "features": b64(record["features"]),  # float32
    }


def legacy_row(record: dict, with_cls_prob: bool = False) -> dict:
    row = {
        "image_id": record["image_id"],
        "image_h": record["image_height"],
        "image_w": record["image_width"],
        "num_boxes": record["num_boxes"],
        "boxes": b64(record["boxes"]),
        "features": b64(record["features"]),
    }
    if with_cls_prob:
        row["cls_prob"] = b64(record["cls_prob"])
    return row


def write_lxmert_tsv_like_original(path, records) -> None:
    with open(path, "w", newline="") as tsv_file:
        writer = csv.DictWriter(tsv_file, delimiter="\t", fieldnames=LXMERT_FIELDNAMES)
        for record in records:
            writer.writerow(lxmert_row(record))


def write_legacy_tsv_like_original(path, records, with_cls_prob: bool = False) -> None:
    fieldnames = ORIGINAL_LEGACY_FIELDNAMES + (["cls_prob"] if with_cls_prob else [])
    with open(path, "w", newline="") as tsv_file:
        writer = csv.DictWriter(tsv_file, delimiter="\t", fieldnames=fieldnames)
        for record in records:
            writer.writerow(legacy_row(record, with_cls_prob))


def write_raw_lines(path, lines: list[str]) -> None:
    """Write tab-joined lines as they are (to build corrupt rows by hand)."""
    with open(path, "w", newline="") as tsv_file:
        tsv_file.write("".join(line + "\n" for line in lines))


def lxmert_line(record: dict, **overrides: str) -> str:
    row = {key: str(value) for key, value in lxmert_row(record).items()}
    row.update(overrides)
    return "\t".join(row[name] for name in LXMERT_FIELDNAMES)


def load_obj_tsv_like_lxmert(fname) -> list[dict]:
    """airsplay/lxmert ``load_obj_tsv``: how LXMERT itself reads the files."""
    old_limit = csv.field_size_limit(sys.maxsize)
    try:
        return _load_obj_tsv(fname)
    finally:
        csv.field_size_limit(old_limit)


def _load_obj_tsv(fname) -> list[dict]:
    data = []
    with open(fname) as f:
        reader = csv.DictReader(f, LXMERT_FIELDNAMES, delimiter="\t")
        for item in reader:
            for key in ["img_h", "img_w", "num_boxes"]:
                item[key] = int(item[key])
            boxes = item["num_boxes"]
            decode_config = [
                ("objects_id", (boxes,), np.int64),
                ("objects_conf", (boxes,), np.float32),
                ("attrs_id", (boxes,), np.int64),
                ("attrs_conf", (boxes,), np.float32),
                ("boxes", (boxes, 4), np.float32),
                ("features", (boxes, -1), np.float32),
            ]
            for key, shape, dtype in decode_config:
                item[key] = np.frombuffer(base64.b64decode(item[key]), dtype=dtype).reshape(shape)
            data.append(item)
    return data
