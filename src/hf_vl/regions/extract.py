"""Dataset-scale region-feature extraction, and the ``python -m hf_vl.regions.extract`` command.

* :func:`extract_region_features` adds ``visual_feats``, ``visual_pos``, ``visual_attention_mask``
  (+ ``image_width``, ``image_height``, and the detector's ``cls_prob``, ``object_ids``,
  ``object_conf``) to a ``datasets.Dataset`` with ``Dataset.map(batched=True)``; the result is cached by
  ``datasets`` under a fingerprint of the input dataset and of the extractor's config and weights, so a
  re-run with the same extractor is read from the cache and any other extractor is recomputed.
* :func:`iter_region_records` / :func:`write_region_features` stream the regions of a dataset to a
  bottom-up-attention TSV file or to per-image ``.npz`` files (:mod:`hf_vl.regions.formats`), boxes
  turned back into pixels of the original image.

Command line (easy-VQA: one record per image, not per question)::

    python -m hf_vl.regions.extract --dataset easy-vqa --split test --extractor grid \\
        --grid-size 4 4 --image-size 64 --output easy_vqa_test_grid.tsv
    python -m hf_vl.regions.extract --dataset easy-vqa --split test --detector PATH --top-k 36 \\
        --output easy_vqa_test_detr.tsv --format tsv --layout legacy

Read the file back with ``hf_vl.regions.formats.load_region_features(path)``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import datasets
import numpy as np
import torch
from datasets.fingerprint import Hasher
from PIL import Image

from .boxes import NORMALIZED_BOX_EPS, validate_region_inputs
from .extractors import (
    DetectorFeatureExtractor,
    GridFeatureExtractor,
    RegionFeatureExtractor,
    load_region_extractor,
)

__all__ = [
    "build_extractor_from_args",
    "extract_region_features",
    "iter_region_records",
    "main",
    "region_example_to_record",
    "unique_images",
    "write_region_features",
]

# Bump when the extraction function changes what it writes: it invalidates every cached result.
_EXTRACTION_VERSION = "hf_vl.regions.extract/1"
_ListFeature = getattr(datasets, "List", datasets.Sequence)


# --------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------


def _load_image(image: Any) -> Any:
    """Decode what a dataset row may hold: a PIL image / array / tensor, a file path, or ``{"bytes", "path"}``."""
    if isinstance(image, (str, os.PathLike)):
        return Image.open(image)
    if isinstance(image, Mapping) and ("bytes" in image or "path" in image):
        return datasets.Image().decode_example(dict(image))
    return image


def _image_width_height(image: Any) -> tuple[int, int]:
    """Width and height in pixels of a PIL image, an ``(H, W[, C])`` array or a ``(C, H, W)`` tensor."""
    if isinstance(image, Image.Image):
        return image.size
    shape = tuple(image.shape)
    if isinstance(image, torch.Tensor) and len(shape) == 3:
        return shape[2], shape[1]
    if len(shape) == 3 and shape[-1] not in (1, 3, 4) and shape[0] in (1, 3, 4):
        return shape[2], shape[1]  # channels-first array
    return shape[1], shape[0]


# --------------------------------------------------------------------------------------------------
# Dataset.map extraction
# --------------------------------------------------------------------------------------------------


def _output_features(extractor: RegionFeatureExtractor, add_image_size: bool) -> dict[str, Any]:
    """``datasets`` features of the columns the extractor adds (fixed shapes -> ``Array2D``)."""
    features: dict[str, Any] = {}
    for key, (shape, dtype) in extractor.output_shapes().items():
        if len(shape) == 2:
            features[key] = datasets.Array2D(shape=shape, dtype=dtype)
        else:
            features[key] = _ListFeature(datasets.Value(dtype), length=shape[0])
    if add_image_size:
        features["image_width"] = datasets.Value("int32")
        features["image_height"] = datasets.Value("int32")
    return features


def _extract_batch(
    batch: dict[str, list[Any]],
    rank: int | None,
    extractor: RegionFeatureExtractor,
    image_column: str,
    add_image_size: bool,
) -> dict[str, Any]:
    if rank is not None and torch.get_num_threads() > 1:
        # A forked worker (num_proc > 1) that enters the parent's OpenMP thread pool deadlocks; the
        # workers are the parallelism, so each one computes single-threaded.
        torch.set_num_threads(1)
    images = [_load_image(image) for image in batch[image_column]]
    with torch.no_grad():
        outputs = extractor(images, return_tensors="np")
    validate_region_inputs(
        outputs["visual_feats"], outputs["visual_pos"], outputs["visual_attention_mask"],
        feat_dim=extractor.feature_dim, pos_dim=extractor.pos_dim,
    )  # fmt: skip
    columns = dict(outputs)
    if add_image_size:
        sizes = np.array([_image_width_height(image) for image in images], dtype=np.int32).reshape(-1, 2)
        columns["image_width"], columns["image_height"] = sizes[:, 0], sizes[:, 1]
    return columns


def extraction_fingerprint(
    dataset: datasets.Dataset, extractor: RegionFeatureExtractor, image_column: str, add_image_size: bool
) -> str:
    """The ``new_fingerprint`` of :func:`extract_region_features`: input dataset + extractor + options."""
    return Hasher.hash(
        {
            "version": _EXTRACTION_VERSION,
            "dataset": dataset._fingerprint,
            "extractor": extractor.fingerprint(),
            "image_column": image_column,
            "add_image_size": add_image_size,
        }
    )


def extract_region_features(
    dataset: datasets.Dataset,
    extractor: RegionFeatureExtractor,
    image_column: str = "image",
    batch_size: int = 32,
    num_proc: int | None = None,
    desc: str | None = "Extracting region features",
    *,
    add_image_size: bool = True,
    load_from_cache_file: bool | None = None,
    cache_file_name: str | None = None,
    keep_in_memory: bool = False,
) -> datasets.Dataset:
    """Add the extractor's region columns to every row of ``dataset`` (``Dataset.map(batched=True)``).

    New columns: ``visual_feats`` (``Array2D (N, feature_dim)`` float32), ``visual_pos``
    (``(N, pos_dim)`` float32), ``visual_attention_mask`` (``N`` int64), for a
    :class:`~hf_vl.regions.extractors.DetectorFeatureExtractor` also ``cls_prob`` ``(N, C)``,
    ``object_ids``, ``object_conf``; with ``add_image_size`` the original ``image_width`` /
    ``image_height`` (int32, needed to write pixel boxes with :func:`write_region_features`).

    The map runs under ``new_fingerprint`` = hash(input fingerprint, ``extractor.fingerprint()`` (config and
    weights), options), so for an on-disk dataset the result is written to a cache file that a re-run
    with an identical extractor loads instead of recomputing; a different extractor (other config or
    weights) gets another fingerprint and is recomputed. ``batch_size`` does not enter the fingerprint.
    In-memory datasets (e.g. :func:`hf_vl.data.load_easy_vqa`) have no cache directory: pass
    ``cache_file_name`` to cache them.

    With ``num_proc > 1`` each worker process runs the extractor with one torch thread. Extraction
    runs in ``torch.no_grad()`` on the extractor's device; every batch is validated
    (finite features, boxes in ``[0, 1]``, shapes) with :func:`hf_vl.regions.boxes.validate_region_inputs`.

    Example:
        >>> from hf_vl.data import load_easy_vqa
        >>> from hf_vl.regions.extractors import GridFeatureExtractor
        >>> questions = load_easy_vqa("test", max_questions_per_split=8)
        >>> with_regions = extract_region_features(questions, GridFeatureExtractor(), desc=None)
        >>> with_regions.with_format("numpy")[0]["visual_feats"].shape
        (16, 31)
    """
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"`dataset` must be a datasets.Dataset, got {type(dataset).__name__}")
    if not isinstance(extractor, RegionFeatureExtractor):
        raise TypeError(
            f"`extractor` must be a GridFeatureExtractor or DetectorFeatureExtractor, got {type(extractor).__name__}"
        )
    if image_column not in dataset.column_names:
        raise ValueError(f"`image_column` {image_column!r} is not a column of the dataset: {dataset.column_names}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
    new_columns = _output_features(extractor, add_image_size)
    clashing = sorted(set(new_columns) & set(dataset.column_names))
    if clashing:
        raise ValueError(f"`dataset` already has the columns {clashing} that the extraction adds; remove them first")
    features = dataset.features.copy()
    features.update(new_columns)
    return dataset.map(
        _extract_batch,
        with_rank=True,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        desc=desc,
        features=features,
        fn_kwargs={"extractor": extractor, "image_column": image_column, "add_image_size": add_image_size},
        new_fingerprint=extraction_fingerprint(dataset, extractor, image_column, add_image_size),
        load_from_cache_file=load_from_cache_file,
        cache_file_name=cache_file_name,
        keep_in_memory=keep_in_memory,
    )


# --------------------------------------------------------------------------------------------------
# records (pixel boxes) and files
# --------------------------------------------------------------------------------------------------


def region_example_to_record(
    example: Mapping[str, Any],
    image_width: int | None = None,
    image_height: int | None = None,
    *,
    id_column: str = "image_id",
    image_column: str = "image",
    drop_global_region: bool = False,
) -> dict[str, Any]:
    """One example's region columns -> a :mod:`~hf_vl.regions.formats` record (pixel boxes, real regions only).

    The image size comes from the arguments, else from ``image_width`` / ``image_height`` in the
    example, else from its decoded ``image_column``. Padding (``visual_attention_mask == 0``) is dropped;
    so is the first region with ``drop_global_region=True`` (it must then be the whole-image box).
    Raises ``ValueError`` for boxes outside the image or NaN features, naming the image id.
    """
    image_id = example.get(id_column)
    if image_id is None:
        raise ValueError(f"example has no `{id_column}` (the image id column); columns: {sorted(example)}")
    if image_width is None or image_height is None:
        if example.get("image_width") is not None and example.get("image_height") is not None:
            image_width, image_height = int(example["image_width"]), int(example["image_height"])
        elif example.get(image_column) is not None:
            image_width, image_height = _image_width_height(_load_image(example[image_column]))
        else:
            raise ValueError(f"image {image_id!r}: no image_width / image_height and no `{image_column}` to measure")
    feats = np.asarray(example["visual_feats"], dtype=np.float32)
    pos = np.asarray(example["visual_pos"], dtype=np.float32)
    mask = example.get("visual_attention_mask")
    keep = np.ones(len(feats), dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    if feats.ndim != 2 or pos.ndim != 2 or pos.shape[0] != feats.shape[0] or keep.shape != (feats.shape[0],):
        raise ValueError(
            f"image {image_id!r}: visual_feats {feats.shape}, visual_pos {pos.shape} and visual_attention_mask "
            f"{keep.shape} must be (N, D), (N, pos_dim), (N,)"
        )
    if drop_global_region:
        if not np.allclose(pos[0, :4], [0.0, 0.0, 1.0, 1.0]):
            raise ValueError(
                f"image {image_id!r}: drop_global_region=True but region 0 is {pos[0, :4].tolist()}, "
                "not the whole image"
            )
        keep[0] = False
    if not np.isfinite(feats[keep]).all():
        raise ValueError(f"image {image_id!r}: visual_feats contain NaN or inf")
    boxes = pos[keep, :4].astype(np.float64)
    eps = NORMALIZED_BOX_EPS
    outside = ~np.isfinite(boxes).all(1) | (boxes < -eps).any(1) | (boxes > 1 + eps).any(1)
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"image {image_id!r}: visual_pos box {boxes[row].tolist()} lies outside the image "
            "(normalised x1, y1, x2, y2 in [0, 1] expected)"
        )
    scale = np.array([image_width, image_height, image_width, image_height], dtype=np.float64)
    record = {
        "image_id": str(image_id),
        "image_width": int(image_width),
        "image_height": int(image_height),
        "num_boxes": int(keep.sum()),
        "boxes": (boxes.clip(0, 1) * scale).astype(np.float32),
        "features": feats[keep],
    }
    for key in ("cls_prob", "object_ids", "object_conf"):  # one name in extractor outputs, columns and files
        if example.get(key) is not None:
            record[key] = np.asarray(example[key])[keep]
    return record


def _batched(iterable: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(iterable)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def iter_region_records(
    examples: Iterable[Mapping[str, Any]],
    extractor: RegionFeatureExtractor,
    image_column: str = "image",
    id_column: str = "image_id",
    batch_size: int = 32,
) -> Iterator[dict[str, Any]]:
    """Run ``extractor`` over ``examples`` (a Dataset, IterableDataset or dicts) and yield file records.

    Records are the dicts of :func:`hf_vl.regions.formats.write_tsv`: pixel boxes of the original image,
    only real regions; the extractor's global region (if any) is left out, since readers add it
    themselves (``load_region_features(add_global=True)``).
    """
    drop_global = bool(getattr(extractor, "add_global_region", False))
    for chunk in _batched(examples, batch_size):
        images = [_load_image(example[image_column]) for example in chunk]
        with torch.no_grad():
            outputs = extractor(images, return_tensors="np")
        for index, (example, image) in enumerate(zip(chunk, images)):
            width, height = _image_width_height(image)
            row = {key: value[index] for key, value in outputs.items()}
            row[id_column] = example[id_column]
            yield region_example_to_record(
                row, width, height, id_column=id_column, drop_global_region=drop_global
            )


def _safe_file_name(image_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", image_id) or "_"


def write_region_features(
    dataset_or_iterable: datasets.Dataset | Iterable[Mapping[str, Any]],
    path: str | os.PathLike,
    format: str = "tsv",
    layout: str = "lxmert",
    *,
    id_column: str = "image_id",
    image_column: str = "image",
    drop_global_region: bool = False,
) -> int:
    """Stream region features to ``path``; return the number of records written.

    ``dataset_or_iterable``: a dataset from :func:`extract_region_features` (its region columns,
    ``image_width`` / ``image_height`` or the image, and ``id_column``), or any iterable of such rows or of
    ready records (dicts with ``boxes`` in pixels and ``features``, e.g. from :func:`iter_region_records`).
    Normalised boxes are turned back into pixels with the image size; padding is dropped.

    ``format="tsv"``: one file in ``layout`` ``"lxmert"`` or ``"legacy"`` (which keeps ``cls_prob``);
    ``format="npz"``: ``path`` is a folder that gets one ``<image_id>.npz`` per image. Rows are not
    de-duplicated: pass one row per image (see :func:`unique_images`).
    """
    if format not in ("tsv", "npz"):
        raise ValueError(f"`format` must be 'tsv' or 'npz', got {format!r}")
    from . import formats

    rows: Iterable[Mapping[str, Any]] = dataset_or_iterable
    if isinstance(dataset_or_iterable, datasets.Dataset):
        columns = dataset_or_iterable.column_names
        if image_column in columns and {"image_width", "image_height"} <= set(columns):
            columns = [column for column in columns if column != image_column]  # no need to decode images
        rows = dataset_or_iterable.select_columns(columns).with_format("numpy")

    def records() -> Iterator[dict[str, Any]]:
        for row in rows:
            if "boxes" in row and "features" in row:
                yield dict(row)
            else:
                yield region_example_to_record(
                    row, id_column=id_column, image_column=image_column, drop_global_region=drop_global_region
                )

    path = os.fspath(path)
    if format == "tsv":
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        return formats.write_tsv(path, records(), layout=layout)
    os.makedirs(path, exist_ok=True)
    count = 0
    for record in records():
        formats.write_npz(os.path.join(path, _safe_file_name(str(record["image_id"]))), record)
        count += 1
    return count


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------


def unique_images(
    dataset: datasets.Dataset, id_column: str = "image_id", max_images: int | None = None
) -> datasets.Dataset:
    """The first row of every distinct ``id_column`` value (VQA datasets repeat an image per question)."""
    if id_column not in dataset.column_names:
        raise ValueError(f"`id_column` {id_column!r} is not a column of the dataset: {dataset.column_names}")
    seen: dict[Any, int] = {}
    for index, image_id in enumerate(dataset.select_columns([id_column])[id_column]):
        if image_id not in seen:
            seen[image_id] = index
            if max_images is not None and len(seen) >= max_images:
                break
    return dataset.select(list(seen.values()))


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hf_vl.regions.extract",
        description="Extract detector-style region features (visual_feats, visual_pos) from a dataset's images "
        "and write them as a bottom-up-attention TSV file or per-image .npz files.",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset", default="easy-vqa", help="'easy-vqa' or a folder written by Dataset(Dict).save_to_disk"
    )
    data.add_argument("--split", default="test", help="split of the dataset (default: test)")
    data.add_argument("--image-column", default="image")
    data.add_argument("--id-column", default="image_id", help="one record is written per distinct value")
    data.add_argument("--max-images", type=int, default=None, help="stop after this many distinct images")
    extractor = parser.add_argument_group("extractor")
    extractor.add_argument(
        "--extractor", default="grid",
        help="'grid' (default), 'detector' (with --detector), or a folder written by an extractor's "
        "save_pretrained (used as saved; the other extractor flags are ignored)",
    )  # fmt: skip
    extractor.add_argument("--grid-size", type=int, nargs=2, default=[4, 4], metavar=("ROWS", "COLS"))
    extractor.add_argument(
        "--image-size", type=int, nargs="+", default=None, metavar="SIZE", help="SIZE or HEIGHT WIDTH"
    )
    extractor.add_argument("--backbone", default=None, help="vision backbone name/path for grid features")
    extractor.add_argument("--projection-dim", type=int, default=None)
    extractor.add_argument("--cell-pool-size", type=int, default=4)
    extractor.add_argument("--orientation-bins", type=int, default=8)
    extractor.add_argument("--foreground-threshold", type=float, default=0.15)
    extractor.add_argument("--seed", type=int, default=0, help="seed of the --projection-dim projection")
    extractor.add_argument(
        "--detector", default=None, help="AutoModelForObjectDetection name/path (implies --extractor detector)"
    )
    extractor.add_argument(
        "--top-k", type=int, default=None, help="regions per image (default: the saved setting, else 36)"
    )
    extractor.add_argument("--score-threshold", type=float, default=None)
    extractor.add_argument("--pos-dim", type=int, choices=(4, 5), default=None, help="4 (default) or 5 (+ area)")
    extractor.add_argument("--add-global-region", action="store_true", help="(grid/detector) not written to files")
    extractor.add_argument("--device", default="cpu")
    extractor.add_argument("--save-extractor", default=None, help="also save the extractor to this folder")
    output = parser.add_argument_group("output")
    output.add_argument("--output", required=True, help="the .tsv file, or the folder of .npz files")
    output.add_argument(
        "--format", choices=("tsv", "npz"), default=None, help="default: npz for an --output without suffix, else tsv"
    )
    output.add_argument("--layout", choices=("lxmert", "legacy"), default="lxmert", help="TSV layout")
    output.add_argument("--batch-size", type=int, default=32)
    return parser


def build_extractor_from_args(args: argparse.Namespace) -> RegionFeatureExtractor:
    """The extractor the command-line arguments describe."""
    image_size = None
    if args.image_size is not None:
        if len(args.image_size) not in (1, 2):
            raise SystemExit("--image-size takes SIZE or HEIGHT WIDTH")
        image_size = args.image_size[0] if len(args.image_size) == 1 else tuple(args.image_size)
    kind = "detector" if args.detector is not None else args.extractor
    if kind == "grid":
        return GridFeatureExtractor(
            image_size=image_size, grid_size=tuple(args.grid_size), pos_dim=args.pos_dim or 4,
            add_global_region=args.add_global_region, backbone=args.backbone, projection_dim=args.projection_dim,
            cell_pool_size=args.cell_pool_size, orientation_bins=args.orientation_bins,
            foreground_threshold=args.foreground_threshold, seed=args.seed,
        )  # fmt: skip
    if kind == "detector":
        if args.detector is None:
            raise SystemExit("--extractor detector needs --detector PATH")
        # Only flags given on the command line override the settings of a saved extractor folder.
        overrides: dict[str, Any] = {"add_global_region": True} if args.add_global_region else {}
        if args.pos_dim is not None:
            overrides["pos_dim"] = args.pos_dim
        if args.score_threshold is not None:
            overrides["score_threshold"] = args.score_threshold
        if image_size is not None:
            overrides["image_size"] = image_size
        return DetectorFeatureExtractor.from_pretrained(args.detector, top_k=args.top_k, **overrides)
    if os.path.isdir(kind):
        return load_region_extractor(kind)
    raise SystemExit(f"--extractor must be 'grid', 'detector' or a saved extractor folder, got {kind!r}")


def _load_dataset(name: str, split: str) -> datasets.Dataset:
    if name.lower().replace("_", "-") == "easy-vqa":
        from hf_vl.data import load_easy_vqa

        return load_easy_vqa(split)
    if os.path.isdir(name):
        loaded = datasets.load_from_disk(name)
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    raise SystemExit(f"--dataset must be 'easy-vqa' or a folder written by save_to_disk, got {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m hf_vl.regions.extract``; returns the exit status."""
    args = _build_parser().parse_args(argv)
    if args.max_images is not None and args.max_images < 1:
        raise SystemExit("--max-images must be positive")
    # Default format: a path without suffix is a folder of .npz files, anything else a TSV file.
    output_format = args.format or ("npz" if not os.path.splitext(args.output.rstrip("/"))[1] else "tsv")
    extractor = build_extractor_from_args(args).to(args.device)
    if args.save_extractor:
        extractor.save_pretrained(args.save_extractor)
    dataset = _load_dataset(args.dataset, args.split)
    images = unique_images(dataset, args.id_column, args.max_images)
    images = images.select_columns([args.image_column, args.id_column])
    records = iter_region_records(images, extractor, args.image_column, args.id_column, args.batch_size)
    count = write_region_features(records, args.output, format=output_format, layout=args.layout)
    print(
        f"wrote {count} images x up to {extractor.num_regions - int(extractor.add_global_region)} regions "
        f"({extractor.feature_dim}-d features) to {args.output} ({output_format}"
        f"{', ' + args.layout if output_format == 'tsv' else ''})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
