"""Region-feature files: the bottom-up-attention TSV layouts, per-image ``.npz`` files, ``datasets`` loading.

Region-based models (adaptive LXMERT, InterBERT, Switch-BERT) read features of detector regions. The
public releases of LXMERT, ViLBERT and VOLTA ship them in two TSV layouts written by the bottom-up
attention Faster R-CNN (Anderson et al., 2018). Both are tab-separated, one image per line, no header,
and store arrays as base64 of the raw little-endian numpy buffer
(``base64.b64encode(array.tobytes())``; read back with
``np.frombuffer(base64.b64decode(field), dtype).reshape(num_boxes, -1)``).

LXMERT layout (:data:`FIELDNAMES`; airsplay/lxmert ``src/utils.py`` ``load_obj_tsv``, written by
airsplay/py-bottom-up-attention and bottom-up-attention ``generate_tsv.py`` of LXMERT's docker image):

==============  ======================  ======================================================
column          content                 record key (what :func:`read_tsv` yields)
==============  ======================  ======================================================
img_id          string                  ``image_id`` (str)
img_h, img_w    integers, pixels        ``image_height``, ``image_width`` (int)
objects_id      base64 int64 (N,)       ``object_ids`` (Visual Genome class of each box)
objects_conf    base64 float32 (N,)     ``object_conf``
attrs_id        base64 int64 (N,)       ``attr_ids`` (Visual Genome attribute)
attrs_conf      base64 float32 (N,)     ``attr_conf``
num_boxes       integer N               ``num_boxes`` (int)
boxes           base64 float32 (N, 4)   ``boxes``: pixel x1, y1, x2, y2 of the original image
features        base64 float32 (N, D)   ``features`` (D = 2048 for the ResNet-101 detector)
==============  ======================  ======================================================

Legacy layout (:data:`LEGACY_FIELDNAMES`; peteanderson80/bottom-up-attention ``tools/generate_tsv.py``
and ``tools/read_tsv.py``, the files of ViLBERT / VOLTA): ``image_id, image_w, image_h, num_boxes,
boxes, features`` (note: width BEFORE height, the reverse of LXMERT), optionally followed by
``cls_prob`` (base64 float32 ``(N, C)``, the detector's class distribution per box, used by masked region
classification with KL targets) and ``attr_prob`` (float32 ``(N, A)``).

Reading (:func:`read_tsv`) detects the layout from the column count of the first row (10: LXMERT; 6, 7,
8: legacy without / with ``cls_prob`` / with both) or from a header line equal to one of the field-name
lists, or takes ``fieldnames`` explicitly. Lines are split on tabs directly instead of through
``csv.reader``: the base64 fields of a 36 x 2048 image are ~400 kB, far over ``csv``'s default
``field_size_limit`` (131,072 characters; LXMERT raises it globally with
``csv.field_size_limit(sys.maxsize)``), and a physical line is always one record, so errors carry exact
line numbers. Fields are never quoted by the detectors' writers (a csv-quoted ``image_id`` is unquoted).

Every row is checked (column count, integers, base64, buffer sizes against ``num_boxes``, finite
features, boxes inside the image up to ``box_tolerance`` pixels, optional ``feature_dim``). A corrupt
row raises :class:`RegionFeatureError` naming the file, the 1-based line and the column; with
``on_error="warn"`` it is skipped and logged instead. Nothing is ever skipped silently.

Per-image ``.npz`` files (:func:`write_npz`, :func:`read_npz`, :func:`iter_npz_dir`) hold the same record
under its record keys; :func:`read_npz` also reads the files of MILVLG/bottom-up-attention.pytorch
(``x``, ``bbox``, ``num_bbox``, ``image_h``, ``image_w``, pickled ``info``), the per-image export
several VQA code bases (MCAN, OpenVQA) read.

:func:`load_region_features` turns any of these into a ``datasets.Dataset`` (or a lazily read
``IterableDataset``) with the model inputs ``visual_feats``, ``visual_pos``, ``visual_attention_mask``;
:func:`attach_region_features` joins it to a VQA dataset by image id.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from .boxes import add_global_region, boxes_to_visual_pos, check_pixel_boxes, normalize_boxes, pad_regions

__all__ = [
    "FIELDNAMES",
    "LEGACY_FIELDNAMES",
    "LEGACY_OPTIONAL_FIELDNAMES",
    "RegionFeatureError",
    "attach_region_features",
    "iter_npz_dir",
    "load_region_features",
    "read_npz",
    "read_tsv",
    "region_feature_lookup",
    "region_features_schema",
    "write_npz",
    "write_tsv",
]

logger = logging.getLogger(__name__)

#: Columns of the LXMERT TSV files (airsplay/lxmert ``src/utils.py``).
FIELDNAMES: list[str] = [
    "img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf", "num_boxes", "boxes",
    "features",
]  # fmt: skip
#: Columns of the original bottom-up-attention TSV files (peteanderson80/bottom-up-attention).
LEGACY_FIELDNAMES: list[str] = ["image_id", "image_w", "image_h", "num_boxes", "boxes", "features"]
#: Optional trailing columns of the legacy layout, in this order (ViLBERT / VOLTA files carry ``cls_prob``).
LEGACY_OPTIONAL_FIELDNAMES: list[str] = ["cls_prob", "attr_prob"]

_LAYOUTS_BY_COLUMN_COUNT: dict[int, list[str]] = {
    len(FIELDNAMES): FIELDNAMES,
    len(LEGACY_FIELDNAMES): LEGACY_FIELDNAMES,
    len(LEGACY_FIELDNAMES) + 1: LEGACY_FIELDNAMES + LEGACY_OPTIONAL_FIELDNAMES[:1],
    len(LEGACY_FIELDNAMES) + 2: LEGACY_FIELDNAMES + LEGACY_OPTIONAL_FIELDNAMES,
}

# TSV column -> record key.
_COLUMN_TO_KEY: dict[str, str] = {
    "img_id": "image_id", "image_id": "image_id",
    "img_h": "image_height", "image_h": "image_height",
    "img_w": "image_width", "image_w": "image_width",
    "num_boxes": "num_boxes", "boxes": "boxes", "features": "features",
    "objects_id": "object_ids", "objects_conf": "object_conf",
    "attrs_id": "attr_ids", "attrs_conf": "attr_conf",
    "cls_prob": "cls_prob", "attr_prob": "attr_prob",
}  # fmt: skip
_REQUIRED_KEYS: tuple[str, ...] = ("image_id", "image_width", "image_height", "num_boxes", "boxes", "features")
_INT_KEYS: tuple[str, ...] = ("image_width", "image_height", "num_boxes")
# Array record keys: (stored little-endian dtype, row shape; () = one value per box, -1 = any width).
_ARRAY_SPECS: dict[str, tuple[str, tuple[int, ...]]] = {
    "boxes": ("<f4", (4,)),
    "features": ("<f4", (-1,)),
    "object_ids": ("<i8", ()),
    "object_conf": ("<f4", ()),
    "attr_ids": ("<i8", ()),
    "attr_conf": ("<f4", ()),
    "cls_prob": ("<f4", (-1,)),
    "attr_prob": ("<f4", (-1,)),
}
_OPTIONAL_ARRAY_KEYS: tuple[str, ...] = ("object_ids", "object_conf", "attr_ids", "attr_conf", "cls_prob", "attr_prob")
_FLOAT_KEYS: frozenset[str] = frozenset(key for key, (dtype, _) in _ARRAY_SPECS.items() if dtype == "<f4")
_ON_ERROR_CHOICES: tuple[str, ...] = ("raise", "warn")
_SHOWN_CHARS = 40  # how much of a bad field an error message quotes

# datasets>=4 names the list feature `List`; 3.x only has `Sequence`.
_ListFeature = getattr(datasets, "List", datasets.Sequence)


class RegionFeatureError(ValueError):
    """A corrupt region-feature record; the message names the file, the 1-based line (TSV) and the field.

    Attributes: ``path``, ``line`` (``None`` for ``.npz`` files), ``field`` (the column / key), ``detail``.
    """

    def __init__(self, path: str | os.PathLike, field: str, detail: str, line: int | None = None):
        self.path, self.field, self.detail, self.line = str(path), field, detail, line
        location = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{location}, field '{field}': {detail}")

    def __reduce__(self):  # keep the error picklable (DataLoader workers, datasets multiprocessing)
        return (type(self), (self.path, self.field, self.detail, self.line))


class _FieldError(Exception):
    """Internal: a bad field, before the caller adds where it was found."""

    def __init__(self, field: str, detail: str):
        super().__init__(detail)
        self.field, self.detail = field, detail


def _check_on_error(on_error: str) -> None:
    if on_error not in _ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {_ON_ERROR_CHOICES}, got {on_error!r}")


def _shown(value: Any) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return repr(text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "...")


# --------------------------------------------------------------------------------------------------
# record validation (shared by the TSV / npz readers and the writers)
# --------------------------------------------------------------------------------------------------


def _as_int(value: Any, key: str) -> int:
    if isinstance(value, (bytes, str)):
        try:
            return int(value.strip())
        except ValueError:
            raise _FieldError(key, f"is not an integer: {_shown(value)}") from None
    array = np.asarray(value)
    if array.ndim == 0 and np.issubdtype(array.dtype, np.integer):
        return int(array)
    if array.ndim == 0 and np.issubdtype(array.dtype, np.floating) and float(array).is_integer():
        return int(array)
    raise _FieldError(key, f"is not an integer: {_shown(value)}")


def _as_array(value: Any, key: str) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise _FieldError(key, f"is not an array: {error}") from None
    dtype, row_shape = _ARRAY_SPECS[key]
    if array.dtype.kind not in "iuf" + ("b" if dtype == "<i8" else ""):
        raise _FieldError(key, f"must be numeric, got dtype {array.dtype}")
    return array.astype(np.dtype(dtype).newbyteorder("="), copy=False)


def _validate_record(record: Mapping[str, Any], feature_dim: int | None, box_tolerance: float) -> dict[str, Any]:
    """Check a record and return it canonical: record keys, python ints, native float32 / int64 arrays."""
    for key in _REQUIRED_KEYS:
        if key == "num_boxes":
            continue
        if record.get(key) is None:
            raise _FieldError(key, "is missing")
    image_id = str(record["image_id"])
    if not image_id:
        raise _FieldError("image_id", "is empty")
    out: dict[str, Any] = {"image_id": image_id}
    for key in ("image_width", "image_height"):
        out[key] = _as_int(record[key], key)
        if out[key] <= 0:
            raise _FieldError(key, f"must be a positive number of pixels, got {out[key]}")
    features = _as_array(record["features"], "features")
    if features.ndim == 2 and features.shape[0] == 0 and feature_dim is not None:
        features = features.reshape(0, feature_dim)
    if features.ndim != 2:
        raise _FieldError("features", f"must have shape (num_boxes, feature_dim), got shape {features.shape}")
    num_boxes = features.shape[0]
    if record.get("num_boxes") is not None and _as_int(record["num_boxes"], "num_boxes") != num_boxes:
        raise _FieldError("num_boxes", f"is {record['num_boxes']} but features has {num_boxes} rows")
    out["num_boxes"] = num_boxes
    if feature_dim is not None and features.shape[1] != feature_dim:
        raise _FieldError("features", f"has feature dimension {features.shape[1]}, expected feature_dim={feature_dim}")
    if not np.isfinite(features).all():
        row = int(np.flatnonzero(~np.isfinite(features).all(axis=1))[0])
        raise _FieldError("features", f"contains NaN or inf (first in box {row})")
    boxes = _as_array(record["boxes"], "boxes")
    if boxes.shape != (num_boxes, 4):
        raise _FieldError("boxes", f"must have shape (num_boxes={num_boxes}, 4), got shape {boxes.shape}")
    try:
        check_pixel_boxes(boxes, out["image_width"], out["image_height"], tolerance=box_tolerance)
    except ValueError as error:
        raise _FieldError("boxes", str(error)) from None
    out["boxes"], out["features"] = boxes, features
    for key in _OPTIONAL_ARRAY_KEYS:
        if record.get(key) is None:
            continue
        array = _as_array(record[key], key)
        expected_ndim = 1 + len(_ARRAY_SPECS[key][1])
        if array.ndim != expected_ndim or array.shape[0] != num_boxes:
            expected = "(num_boxes,)" if expected_ndim == 1 else "(num_boxes, num_classes)"
            raise _FieldError(key, f"must have shape {expected} with num_boxes={num_boxes}, got shape {array.shape}")
        if key in _FLOAT_KEYS and not np.isfinite(array).all():
            raise _FieldError(key, "contains NaN or inf")
        out[key] = array
    return out


# --------------------------------------------------------------------------------------------------
# TSV reading
# --------------------------------------------------------------------------------------------------


def _decode_base64_array(field: bytes, key: str, num_boxes: int) -> np.ndarray:
    """``np.frombuffer(base64.b64decode(field), dtype).reshape(num_boxes, ...)``, checking every size."""
    field = field.strip()
    if field[:2] in (b"b'", b'b"') and field[-1:] == field[1:2]:
        field = field[2:-1]  # str(bytes) written by a Python 3 writer that forgot .decode()
    try:
        raw = base64.b64decode(field, validate=True)
    except (binascii.Error, ValueError) as error:
        raise _FieldError(key, f"is not valid base64 ({error}): {_shown(field)}") from None
    dtype, row_shape = _ARRAY_SPECS[key]
    itemsize = np.dtype(dtype).itemsize
    type_name = "float32" if dtype == "<f4" else "int64"
    if len(raw) % itemsize:
        raise _FieldError(key, f"decodes to {len(raw)} bytes, not a whole number of {type_name} values")
    values = np.frombuffer(raw, dtype=dtype)
    if row_shape == (-1,):
        if num_boxes == 0 and values.size == 0:
            return np.zeros((0, 0), dtype=np.float32)
        if num_boxes == 0 or values.size % num_boxes:
            raise _FieldError(
                key, f"holds {values.size} {type_name} values, not divisible into num_boxes={num_boxes} rows"
            )
        shape: tuple[int, ...] = (num_boxes, values.size // num_boxes)
    else:
        shape = (num_boxes, *row_shape)
        if values.size != int(np.prod(shape)):
            raise _FieldError(
                key, f"holds {values.size} {type_name} values, expected {shape} for num_boxes={num_boxes}"
            )
    # astype copies: the arrays are writable and native-endian (frombuffer views are read-only).
    return values.reshape(shape).astype(np.dtype(dtype).newbyteorder("="))


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('""', '"')
    return text


def _decode_row(
    fields: list[bytes], columns: list[str], feature_dim: int | None, box_tolerance: float
) -> dict[str, Any]:
    if len(fields) != len(columns):
        missing = columns[len(fields)] if len(fields) < len(columns) else "columns"
        raise _FieldError(
            missing, f"expected {len(columns)} tab-separated columns ({', '.join(columns)}), got {len(fields)}"
        )
    key_to_column = {_COLUMN_TO_KEY[column]: column for column in columns if column in _COLUMN_TO_KEY}
    by_key = {_COLUMN_TO_KEY[column]: field for column, field in zip(columns, fields) if column in _COLUMN_TO_KEY}
    try:
        record: dict[str, Any] = {}
        try:
            record["image_id"] = _unquote(by_key["image_id"].decode("utf-8"))
        except UnicodeDecodeError:
            raise _FieldError("image_id", f"is not UTF-8 text: {_shown(by_key['image_id'])}") from None
        for key in _INT_KEYS:
            record[key] = _as_int(by_key[key], key)
        if record["num_boxes"] < 0:
            raise _FieldError("num_boxes", f"must be >= 0, got {record['num_boxes']}")
        for key, field in by_key.items():
            if key in _ARRAY_SPECS:
                record[key] = _decode_base64_array(field, key, record["num_boxes"])
        return _validate_record(record, feature_dim, box_tolerance)
    except _FieldError as error:
        raise _FieldError(key_to_column.get(error.field, error.field), error.detail) from None


def _columns_for(fieldnames: Sequence[str] | None) -> list[str] | None:
    if fieldnames is None:
        return None
    columns = [str(name) for name in fieldnames]
    present = {_COLUMN_TO_KEY.get(column) for column in columns}
    missing = [key for key in _REQUIRED_KEYS if key not in present]
    if missing:
        raise ValueError(
            f"fieldnames must name the columns of {missing} (e.g. {FIELDNAMES} or {LEGACY_FIELDNAMES}), got {columns}"
        )
    return columns


def _iter_tsv_lines(
    path: str, fieldnames: list[str] | None, feature_dim: int | None, on_error: str, box_tolerance: float
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` for every good row of a TSV file, reading it line by line."""
    known_headers = [layout for layout in _LAYOUTS_BY_COLUMN_COUNT.values()]
    if fieldnames is not None:
        known_headers.append(fieldnames)
    columns = fieldnames
    seen_content = False
    with open(path, "rb") as tsv_file:
        for line_number, raw_line in enumerate(tsv_file, start=1):
            line = raw_line.rstrip(b"\r\n")
            if not line.strip():
                continue  # blank lines hold no record (e.g. a trailing newline)
            fields = line.split(b"\t")
            first_content, seen_content = not seen_content, True
            if first_content:
                as_text = [field.decode("utf-8", "replace") for field in fields]
                if as_text in known_headers:
                    columns = columns or as_text
                    continue
            try:
                if columns is None:
                    if len(fields) not in _LAYOUTS_BY_COLUMN_COUNT:
                        raise _FieldError(
                            "columns",
                            f"{len(fields)} tab-separated columns match no known layout (10: LXMERT {FIELDNAMES}; "
                            f"6-8: {LEGACY_FIELDNAMES} + {LEGACY_OPTIONAL_FIELDNAMES}); pass fieldnames=",
                        )
                    columns = _LAYOUTS_BY_COLUMN_COUNT[len(fields)]
                record = _decode_row(fields, columns, feature_dim, box_tolerance)
            except _FieldError as error:
                region_error = RegionFeatureError(path, error.field, error.detail, line_number)
                if on_error == "raise":
                    raise region_error from None
                logger.warning("Skipping a corrupt region-feature row: %s", region_error)
                continue
            yield line_number, record


def read_tsv(
    path: str | os.PathLike,
    fieldnames: Sequence[str] | None = None,
    feature_dim: int | None = None,
    *,
    on_error: str = "raise",
    box_tolerance: float = 1.0,
) -> Iterator[dict[str, Any]]:
    """Lazily read a bottom-up-attention TSV file (LXMERT or legacy layout, see the module docstring).

    Yields one record per image::

        {"image_id": str, "image_width": int, "image_height": int, "num_boxes": int,
         "boxes": (N, 4) float32 pixel x1, y1, x2, y2, "features": (N, D) float32,
         optional "object_ids", "object_conf", "attr_ids", "attr_conf" (N,), "cls_prob", "attr_prob" (N, C)}

    Args:
        path: the ``.tsv`` file (also the ``.tsv.0``, ``.tsv.1`` shards the detectors write).
        fieldnames: the column names, when the file has neither a known layout nor a header line.
        feature_dim: when given, every row's feature dimension must equal it.
        on_error: ``"raise"`` (default) raises :class:`RegionFeatureError` (file, line, field) at the first
            corrupt row; ``"warn"`` logs it and skips the row.
        box_tolerance: how far (pixels) a box may stick out of the image before the row is corrupt.

    The file is read line by line as the iterator is consumed, so a corrupt row is reported only when
    reached.

    Example:
        >>> for record in read_tsv("train2014_obj36.tsv"):  # doctest: +SKIP
        ...     record["image_id"], record["features"].shape
        ('COCO_train2014_000000000009', (36, 2048))
    """
    _check_on_error(on_error)
    columns = _columns_for(fieldnames)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"region-feature TSV file not found: {path}")
    return (record for _, record in _iter_tsv_lines(path, columns, feature_dim, on_error, box_tolerance))


# --------------------------------------------------------------------------------------------------
# TSV writing
# --------------------------------------------------------------------------------------------------


def _encode_array(array: np.ndarray, key: str) -> str:
    dtype, _ = _ARRAY_SPECS[key]
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def _tsv_fields(record: dict[str, Any], columns: list[str]) -> list[str]:
    """One canonical record -> the text of each column (missing per-box LXMERT arrays become zeros)."""
    fields = []
    for column in columns:
        key = _COLUMN_TO_KEY[column]
        if key in _ARRAY_SPECS:
            value = record.get(key)
            if value is None:
                # py-bottom-up-attention writes zeros for attributes a detector does not predict.
                value = np.zeros(record["num_boxes"], dtype=_ARRAY_SPECS[key][0])
            fields.append(_encode_array(value, key))
        else:
            fields.append(str(record[key]))
    return fields


def write_tsv(
    path: str | os.PathLike,
    records: Iterable[Mapping[str, Any]],
    layout: str = "lxmert",
    *,
    header: bool = False,
    append: bool = False,
    box_tolerance: float = 1.0,
) -> int:
    """Write records (the dicts :func:`read_tsv` yields) as a bottom-up-attention TSV file; return the count.

    ``records`` is consumed one at a time and each row is written at once, so an extraction run can
    stream millions of images through it. Arrays may be numpy arrays, torch tensors or lists; boxes
    are pixel ``x1, y1, x2, y2`` of the ``image_width x image_height`` image.

    Args:
        layout: ``"lxmert"`` (:data:`FIELDNAMES`, what LXMERT reads; per-box ``object_ids``,
            ``object_conf``, ``attr_ids``, ``attr_conf`` missing from a record are written as zeros, as
            py-bottom-up-attention does for a detector without attribute head) or ``"legacy"``
            (:data:`LEGACY_FIELDNAMES`, plus ``cls_prob`` / ``attr_prob`` columns when the FIRST record has
            them; every record must then have them; object/attribute ids have no column there and are
            not written). The LXMERT layout has no ``cls_prob`` / ``attr_prob`` columns: they are not
            written there; use ``"legacy"`` (or :func:`write_npz`) to keep them.
        header: write the column names as a first line of a new file (readers here accept it; LXMERT's
            own reader would not, so the default is no header, like the original files).
        append: add rows to an existing file instead of replacing it (resuming an extraction run).

    Raises ``ValueError`` naming ``records[i]`` and the field for an invalid record; rows before it
    are already written.

    Example:
        >>> record = {"image_id": "img0", "image_width": 640, "image_height": 480,
        ...           "boxes": np.array([[0, 0, 10, 10]], np.float32), "features": np.ones((1, 8), np.float32)}
        >>> write_tsv("regions.tsv", [record])  # doctest: +SKIP
        1
    """
    if layout not in ("lxmert", "legacy"):
        raise ValueError(f"layout must be 'lxmert' or 'legacy', got {layout!r}")
    columns: list[str] | None = list(FIELDNAMES) if layout == "lxmert" else None
    count = 0
    with open(path, "a" if append else "w", encoding="utf-8", newline="") as tsv_file:
        for index, raw_record in enumerate(records):
            try:
                record = _validate_record(raw_record, feature_dim=None, box_tolerance=box_tolerance)
                if any(char in record["image_id"] for char in "\t\r\n"):
                    raise _FieldError("image_id", f"must not contain tabs or line breaks: {_shown(record['image_id'])}")
                if columns is None:
                    optional = [name for name in LEGACY_OPTIONAL_FIELDNAMES if name in record]
                    if optional == ["attr_prob"]:
                        raise _FieldError("cls_prob", "is missing (the legacy layout puts attr_prob after cls_prob)")
                    columns = LEGACY_FIELDNAMES + optional
                missing = [column for column in columns if _COLUMN_TO_KEY[column] not in record]
                if missing and layout == "legacy":
                    raise _FieldError(_COLUMN_TO_KEY[missing[0]], "is missing, but the first record of the file had it")
            except _FieldError as error:
                image_id = _shown(raw_record.get("image_id"))
                location = f"records[{index}] (image_id {image_id}) field '{error.field}'"
                raise ValueError(f"{location}: {error.detail}") from None
            if header and index == 0 and tsv_file.tell() == 0:  # appending to a file: it has its header
                tsv_file.write("\t".join(columns) + "\n")
            tsv_file.write("\t".join(_tsv_fields(record, columns)) + "\n")
            count += 1
    return count


# --------------------------------------------------------------------------------------------------
# per-image .npz files
# --------------------------------------------------------------------------------------------------

# npz key aliases of MILVLG/bottom-up-attention.pytorch (`np.savez_compressed(..., x=feats, bbox=boxes,
# num_bbox=N, image_h=H, image_w=W, info={...})`).
_NPZ_ALIASES: dict[str, tuple[str, ...]] = {
    "features": ("features", "x"),
    "boxes": ("boxes", "bbox"),
    "num_boxes": ("num_boxes", "num_bbox"),
    "image_width": ("image_width", "image_w"),
    "image_height": ("image_height", "image_h"),
}
_NPZ_INFO_KEYS: dict[str, str] = {
    "objects_id": "object_ids", "objects_conf": "object_conf", "attrs_id": "attr_ids", "attrs_conf": "attr_conf",
}  # fmt: skip


def write_npz(path: str | os.PathLike, record: Mapping[str, Any], *, compressed: bool = True) -> str:
    """Save one image's record as ``.npz`` (``.npz`` is appended to ``path`` when missing); return the path.

    Layout (every array is a plain numeric / unicode array, so reading needs no pickle):
    ``image_id`` (0-d unicode), ``image_width``, ``image_height``, ``num_boxes`` (0-d int64),
    ``boxes`` (N, 4) float32 pixel x1, y1, x2, y2, ``features`` (N, D) float32, and when present
    ``object_ids`` / ``attr_ids`` (N,) int64, ``object_conf`` / ``attr_conf`` (N,) float32, ``cls_prob`` /
    ``attr_prob`` (N, C) float32. These are the keys of :func:`read_tsv` records, so a TSV converts to
    per-image files and back losslessly.

    Example:
        >>> write_npz("npz_dir/img0", record)  # doctest: +SKIP
        'npz_dir/img0.npz'
    """
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    try:
        canonical = _validate_record(record, feature_dim=None, box_tolerance=1.0)
    except _FieldError as error:
        raise RegionFeatureError(path, error.field, error.detail) from None
    arrays = {key: np.asarray(value) for key, value in canonical.items()}
    arrays["image_id"] = np.array(canonical["image_id"], dtype=np.str_)
    for key in _INT_KEYS:
        arrays[key] = np.array(canonical[key], dtype=np.int64)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def read_npz(
    path: str | os.PathLike,
    feature_dim: int | None = None,
    *,
    allow_pickle: bool = False,
    box_tolerance: float = 1.0,
) -> dict[str, Any]:
    """Read one per-image ``.npz`` file into a record (the dict format of :func:`read_tsv`).

    Reads the layout of :func:`write_npz` and the MILVLG/bottom-up-attention.pytorch export (``x``
    features, ``bbox`` pixel boxes, ``num_bbox``, ``image_h``, ``image_w``). That export also stores a
    pickled ``info`` dict (object / attribute ids and confidences); it is read only with
    ``allow_pickle=True``, because unpickling can run arbitrary code: enable it for trusted files only.
    ``image_id`` defaults to the file name without ``.npz``. Invalid content raises
    :class:`RegionFeatureError` naming the file and the key.
    """
    path = os.fspath(path)
    with np.load(path, allow_pickle=allow_pickle) as npz:
        keys = set(npz.files)
        record: dict[str, Any] = {}
        for key, aliases in _NPZ_ALIASES.items():
            found = next((alias for alias in aliases if alias in keys), None)
            if found is not None:
                record[key] = npz[found]
            elif key != "num_boxes":
                detail = f"is missing (looked for {list(aliases)}; the file holds {sorted(keys)})"
                raise RegionFeatureError(path, key, detail)
        for key in _OPTIONAL_ARRAY_KEYS:
            if key in keys:
                record[key] = npz[key]
        if allow_pickle and "info" in keys:
            info = npz["info"].item()
            record.update({ours: info[theirs] for theirs, ours in _NPZ_INFO_KEYS.items() if theirs in info})
        record["image_id"] = str(npz["image_id"]) if "image_id" in keys else Path(path).name[: -len(".npz")]
    try:
        return _validate_record(record, feature_dim, box_tolerance)
    except _FieldError as error:
        raise RegionFeatureError(path, error.field, error.detail) from None


def iter_npz_dir(
    directory: str | os.PathLike,
    feature_dim: int | None = None,
    *,
    on_error: str = "raise",
    allow_pickle: bool = False,
) -> Iterator[dict[str, Any]]:
    """Lazily read every ``*.npz`` file of ``directory`` (sorted by name) with :func:`read_npz`.

    ``on_error="warn"`` logs and skips corrupt files instead of raising :class:`RegionFeatureError`.
    """
    _check_on_error(on_error)
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise NotADirectoryError(f"not a directory of .npz region files: {directory}")
    return (record for _, record in _iter_npz_files(_npz_files(directory), feature_dim, on_error, allow_pickle))


def _npz_files(directory: str) -> list[str]:
    return sorted(str(path) for path in Path(directory).glob("*.npz"))


def _iter_npz_files(
    paths: Iterable[str], feature_dim: int | None, on_error: str, allow_pickle: bool, box_tolerance: float = 1.0
) -> Iterator[tuple[None, dict[str, Any]]]:
    for path in paths:
        try:
            record = read_npz(path, feature_dim, allow_pickle=allow_pickle, box_tolerance=box_tolerance)
        except RegionFeatureError as error:
            if on_error == "raise":
                raise
            logger.warning("Skipping a corrupt region-feature file: %s", error)
            continue
        yield None, record


# --------------------------------------------------------------------------------------------------
# datasets: load_region_features, lookup and join
# --------------------------------------------------------------------------------------------------


def _resolve_sources(paths: Any, format: str | None) -> list[tuple[str, str]]:
    """``paths`` -> ``[(format, file)]``; directories expand to their ``.npz`` files."""
    if format not in (None, "tsv", "npz"):
        raise ValueError(f"format must be 'tsv', 'npz' or None (detect from the file name), got {format!r}")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    sources: list[tuple[str, str]] = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            if format == "tsv":
                raise ValueError(f"format='tsv' but {path} is a directory (directories hold .npz files)")
            sources.extend(("npz", file) for file in _npz_files(path))
            continue
        if not os.path.isfile(path):
            raise FileNotFoundError(f"region-feature file not found: {path}")
        name = os.path.basename(path).lower()
        detected = "npz" if name.endswith(".npz") else "tsv" if (".tsv" in name or name.endswith(".csv")) else None
        if format is None and detected is None:
            raise ValueError(f"cannot detect the format of {path} from its name; pass format='tsv' or format='npz'")
        sources.append((format or detected, path))
    if not sources:
        raise ValueError(f"no region-feature files found in paths={paths!r}")
    return sources


def _iter_source_records(
    formats: Sequence[str], files: Sequence[str], feature_dim: int | None, on_error: str, box_tolerance: float
) -> Iterator[tuple[str, int | None, dict[str, Any]]]:
    for format, path in zip(formats, files):
        if format == "tsv":
            lines = _iter_tsv_lines(path, None, feature_dim, on_error, box_tolerance)
        else:
            lines = _iter_npz_files([path], feature_dim, on_error, allow_pickle=False, box_tolerance=box_tolerance)
        for line, record in lines:
            yield path, line, record


def _pad_rows(array: np.ndarray, max_regions: int) -> np.ndarray:
    padded = np.zeros((max_regions, array.shape[1]), dtype=np.float32)
    padded[: min(len(array), max_regions)] = array[:max_regions]
    return padded


def _record_to_example(record: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """One record -> model inputs: normalised boxes, optional global region, padding to ``max_regions``."""
    width, height = record["image_width"], record["image_height"]
    pixel_boxes, visual_feats = record["boxes"], record["features"]
    normalized_boxes = normalize_boxes(pixel_boxes, width, height, options["box_tolerance"])
    visual_pos = boxes_to_visual_pos(normalized_boxes, options["pos_dim"])
    cls_prob = record.get("cls_prob")
    if options["cls_prob_dim"] is not None:
        if cls_prob is None or cls_prob.shape[1] != options["cls_prob_dim"]:
            shape = None if cls_prob is None else cls_prob.shape
            expected = f"(num_boxes, {options['cls_prob_dim']})"
            raise _FieldError("cls_prob", f"must have shape {expected} like the first record, got {shape}")
    if options["add_global"]:
        if len(visual_feats) == 0:
            raise _FieldError("features", "has 0 regions, so add_global=True has no mean feature to add")
        visual_feats, visual_pos = add_global_region(visual_feats, visual_pos)
        pixel_boxes = np.concatenate([np.array([[0, 0, width, height]], np.float32), pixel_boxes])
        if cls_prob is not None:  # the global region has no class distribution (never a masked-region target)
            cls_prob = np.concatenate([np.zeros((1, cls_prob.shape[1]), np.float32), cls_prob])
    visual_feats, visual_pos, visual_attention_mask = pad_regions(visual_feats, visual_pos, options["max_regions"])
    example = {
        "image_id": record["image_id"],
        "image_width": width,
        "image_height": height,
        "visual_feats": visual_feats,
        "visual_pos": visual_pos,
        "visual_attention_mask": visual_attention_mask,
    }
    if options["cls_prob_dim"] is not None:
        example["cls_prob"] = _pad_rows(cls_prob, options["max_regions"])
    if options["keep_boxes"]:
        example["boxes"] = _pad_rows(pixel_boxes, options["max_regions"])
    return example


def _generate_region_examples(
    formats: list[str], files: list[str], file_signatures: list[str], options: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """The generator behind :func:`load_region_features` (module level so ``datasets`` can hash and shard it).

    ``file_signatures`` (size and mtime of each file) only enter the cache fingerprint: a changed file
    is read again instead of served from a stale cache.
    """
    del file_signatures
    records = _iter_source_records(
        formats, files, options["feature_dim"], options["on_error"], options["box_tolerance"]
    )
    for path, line, record in records:
        try:
            yield _record_to_example(record, options)
        except _FieldError as error:
            region_error = RegionFeatureError(path, error.field, error.detail, line)
            if options["on_error"] == "raise":
                raise region_error from None
            logger.warning("Skipping a region-feature record: %s", region_error)


def _file_signature(path: str) -> str:
    stat = os.stat(path)
    return f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}"


def _first_record(
    sources: list[tuple[str, str]], feature_dim: int | None, on_error: str, box_tolerance: float
) -> dict[str, Any]:
    """The first record with at least one box: it fixes the feature (and ``cls_prob``) width of the columns."""
    formats, files = zip(*sources)
    for _, _, record in _iter_source_records(formats, files, feature_dim, on_error, box_tolerance):
        if record["num_boxes"] > 0:
            return record
    raise ValueError(f"no image with at least one region in {list(files)}; cannot infer the feature dimension")


def region_features_schema(
    feature_dim: int, max_regions: int = 36, pos_dim: int = 4, cls_prob_dim: int | None = None, keep_boxes: bool = False
) -> datasets.Features:
    """The ``datasets.Features`` of :func:`load_region_features` (fixed-size ``Array2D`` per image)."""
    features = {
        "image_id": datasets.Value("string"),
        "image_width": datasets.Value("int32"),
        "image_height": datasets.Value("int32"),
        "visual_feats": datasets.Array2D((max_regions, feature_dim), "float32"),
        "visual_pos": datasets.Array2D((max_regions, pos_dim), "float32"),
        "visual_attention_mask": _ListFeature(datasets.Value("int64"), length=max_regions),
    }
    if cls_prob_dim is not None:
        features["cls_prob"] = datasets.Array2D((max_regions, cls_prob_dim), "float32")
    if keep_boxes:
        features["boxes"] = datasets.Array2D((max_regions, 4), "float32")
    return datasets.Features(features)


def load_region_features(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    format: str | None = None,
    streaming: bool = False,
    max_regions: int = 36,
    pos_dim: int = 4,
    add_global: bool = False,
    keep_boxes: bool = False,
    *,
    feature_dim: int | None = None,
    on_error: str = "raise",
    box_tolerance: float = 1.0,
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load region-feature files as a ``datasets`` dataset of model inputs, one row per image.

    Columns: ``image_id`` (string), ``image_width``, ``image_height`` (int32), ``visual_feats``
    (``Array2D (max_regions, D)`` float32), ``visual_pos`` (``(max_regions, pos_dim)`` float32, boxes
    normalised to ``[0, 1]``; ``pos_dim=5`` adds the area), ``visual_attention_mask`` (``max_regions``
    int64, 1 for real regions), plus ``cls_prob`` (``(max_regions, C)``, zero-padded) when the files carry
    it and ``boxes`` (pixel boxes, zero-padded) with ``keep_boxes=True``.

    Args:
        paths: one path or a list; ``.tsv`` files (also ``.tsv.0`` shards), ``.npz`` files, or
            directories of ``.npz`` files. ``format`` forces ``"tsv"`` / ``"npz"`` for every file.
        streaming: ``True`` returns an ``IterableDataset`` that reads the files lazily while iterated
            (files larger than memory; DataLoader workers shard it by file); ``False`` builds an
            Arrow-backed ``Dataset`` once (cached under ``cache_dir``; a changed file is re-read).
        max_regions: regions per image after padding / truncation (the first ones are kept).
        add_global: prepend the VOLTA / UNITER global region (mean feature, whole-image box). It counts
            within ``max_regions``, as VOLTA's ``max_region_num`` (36 boxes + global = 37).
        feature_dim: expected feature width; by default that of the first image with regions.
        on_error: ``"raise"`` or ``"warn"`` (skip corrupt rows / files, logging them).

    The first image with regions is read immediately to size the columns; the rest is read when the
    dataset is built (``streaming=False``) or iterated (``streaming=True``).

    Example:
        >>> regions = load_region_features(  # doctest: +SKIP
        ...     "val2014_obj36.tsv", pos_dim=5, add_global=True, max_regions=37
        ... ).with_format("numpy")
        >>> regions[0]["visual_feats"].shape  # doctest: +SKIP
        (37, 2048)
    """
    if not isinstance(max_regions, int) or isinstance(max_regions, bool) or max_regions < 1:
        raise ValueError(f"max_regions must be a positive integer, got {max_regions!r}")
    if pos_dim not in (4, 5):
        raise ValueError(f"pos_dim must be 4 (x1, y1, x2, y2) or 5 (+ area), got {pos_dim!r}")
    _check_on_error(on_error)
    sources = _resolve_sources(paths, format)
    first = _first_record(sources, feature_dim, on_error, box_tolerance)
    feature_dim = first["features"].shape[1]
    cls_prob_dim = first["cls_prob"].shape[1] if "cls_prob" in first else None
    options = {
        "max_regions": max_regions, "pos_dim": pos_dim, "add_global": bool(add_global),
        "keep_boxes": bool(keep_boxes), "feature_dim": feature_dim, "cls_prob_dim": cls_prob_dim,
        "on_error": on_error, "box_tolerance": float(box_tolerance),
    }  # fmt: skip
    gen_kwargs = {
        "formats": [format for format, _ in sources],
        "files": [path for _, path in sources],
        "file_signatures": [_file_signature(path) for _, path in sources],
        "options": options,
    }
    features = region_features_schema(feature_dim, max_regions, pos_dim, cls_prob_dim, keep_boxes)
    if streaming:
        return datasets.IterableDataset.from_generator(
            _generate_region_examples, features=features, gen_kwargs=gen_kwargs
        )
    try:
        return datasets.Dataset.from_generator(
            _generate_region_examples,
            features=features,
            gen_kwargs=gen_kwargs,
            cache_dir=os.fspath(cache_dir) if cache_dir is not None else None,
        )
    except Exception as error:
        # datasets wraps generator errors in DatasetGenerationError; surface the file / line / field.
        cause = error.__cause__ or error.__context__
        while cause is not None and not isinstance(cause, RegionFeatureError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise cause from None


def region_feature_lookup(dataset: datasets.Dataset) -> dict[str, int]:
    """``image_id -> row index`` of a region dataset (from :func:`load_region_features`).

    Raises ``ValueError`` when an image id occurs twice (e.g. overlapping TSV shards), since a join
    by id would then be ambiguous.
    """
    if isinstance(dataset, datasets.IterableDataset):
        raise TypeError("region_feature_lookup needs random access: load the regions with streaming=False")
    if "image_id" not in dataset.column_names:
        raise ValueError(f"dataset has no 'image_id' column (columns: {dataset.column_names})")
    lookup: dict[str, int] = {}
    for row, image_id in enumerate(dataset["image_id"]):
        image_id = str(image_id)
        if image_id in lookup:
            raise ValueError(
                f"image_id {image_id!r} occurs twice in the region dataset (rows {lookup[image_id]} and {row})"
            )
        lookup[image_id] = row
    return lookup


_REGION_INPUT_COLUMNS: tuple[str, ...] = ("visual_feats", "visual_pos", "visual_attention_mask")


def _add_region_columns(
    batch: dict[str, list[Any]],
    image_id_column: str,
    lookup: dict[str, int],
    regions: datasets.Dataset,
    image_id_fn: Any,
) -> dict[str, Any]:
    rows = []
    for image_id in batch[image_id_column]:
        key = str(image_id_fn(image_id) if image_id_fn is not None else image_id)
        if key not in lookup:
            example_ids = list(lookup)[:3]
            raise ValueError(
                f"{image_id_column} {image_id!r} (looked up as {key!r}) has no region features; the region "
                f"dataset holds {len(lookup)} images with ids like {example_ids} (map ids with image_id_fn=)"
            )
        rows.append(lookup[key])
    selected = regions[rows]
    return {column: selected[column] for column in _REGION_INPUT_COLUMNS}


def attach_region_features(
    vqa_dataset: datasets.Dataset | datasets.IterableDataset,
    region_dataset: datasets.Dataset,
    image_id_column: str = "image_id",
    *,
    image_id_fn: Any = None,
    batch_size: int = 256,
) -> datasets.Dataset | datasets.IterableDataset:
    """Add ``visual_feats``, ``visual_pos``, ``visual_attention_mask`` to every row of ``vqa_dataset``.

    Rows are joined on ``vqa_dataset[image_id_column]`` == ``region_dataset["image_id"]`` (compared as
    strings; ``image_id_fn`` maps a VQA id to the region file's id first, e.g.
    ``lambda i: f"COCO_val2014_{i:012d}"``). Runs ``map(batched=True)``; an id without regions raises
    ``ValueError`` naming it.

    Example:
        >>> vqa = attach_region_features(vqa, load_region_features("val2014_obj36.tsv"))  # doctest: +SKIP
    """
    if vqa_dataset.column_names is not None and image_id_column not in vqa_dataset.column_names:
        raise ValueError(
            f"image_id_column {image_id_column!r} is not a column of vqa_dataset ({vqa_dataset.column_names})"
        )
    lookup = region_feature_lookup(region_dataset)
    regions = region_dataset.select_columns(list(_REGION_INPUT_COLUMNS)).with_format("numpy")
    features = None
    if vqa_dataset.features is not None:
        features = vqa_dataset.features.copy()
        features.update({column: region_dataset.features[column] for column in _REGION_INPUT_COLUMNS})
    return vqa_dataset.map(
        _add_region_columns,
        batched=True,
        batch_size=batch_size,
        features=features,
        fn_kwargs={
            "image_id_column": image_id_column, "lookup": lookup, "regions": regions, "image_id_fn": image_id_fn,
        },
    )  # fmt: skip
