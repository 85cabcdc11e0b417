"""Detector-region features for the region-based models (adaptive LXMERT, InterBERT, Switch-BERT).

The models read LXMERT's inputs: ``visual_feats (B, N, feat_dim)``, ``visual_pos (B, N, pos_dim)`` (boxes
normalised to ``[0, 1]``; ``pos_dim`` 4 = x1, y1, x2, y2, 5 = + area) and ``visual_attention_mask (B, N)``.

- :mod:`hf_vl.regions.boxes`: box conventions (pixel -> normalised -> ``visual_pos``), IoU, the global
  region, padding, and the input validation shared by processors and models.
- :mod:`hf_vl.regions.formats`: the bottom-up-attention TSV layouts of the LXMERT / ViLBERT / VOLTA
  releases, per-image ``.npz`` files, and loading them as ``datasets`` datasets joined to VQA data.
- :mod:`hf_vl.regions.extractors`: raw images -> regions (``GridFeatureExtractor``, ``DetectorFeatureExtractor``).
- :mod:`hf_vl.regions.extract`: dataset-scale extraction (``extract_region_features``) and writing the
  regions to TSV / ``.npz`` files (``write_region_features``).
- :mod:`hf_vl.regions.codebook`: ``RegionCodebook``, k-means region classes (ids and soft distributions) as
  masked-region-modelling targets where no detector gives classes.
- :mod:`hf_vl.regions.processing`: ``RegionProcessor``, tokenizer + region source (raw images through an
  extractor, or precomputed regions) for the region models, the ``Trainer`` and the pipelines.
"""

from .boxes import (
    GLOBAL_REGION_BOX,
    NORMALIZED_BOX_EPS,
    add_global_region,
    box_area,
    box_iou,
    boxes_to_visual_pos,
    check_pixel_boxes,
    normalize_boxes,
    pad_regions,
    validate_region_inputs,
)
from .codebook import RegionCodebook
from .box_features import BOX_FEATURE_EXTRACTOR_SUBFOLDER, BoxFeatureExtractor
from .extractors import DetectorFeatureExtractor, GridFeatureExtractor, RegionFeatureExtractor
from .formats import (
    FIELDNAMES,
    LEGACY_FIELDNAMES,
    LEGACY_OPTIONAL_FIELDNAMES,
    RegionFeatureError,
    attach_region_features,
    iter_npz_dir,
    load_region_features,
    read_npz,
    read_tsv,
    region_feature_lookup,
    region_features_schema,
    write_npz,
    write_tsv,
)
from .processing import RegionProcessor

# `hf_vl.regions.extract` is also a command (`python -m hf_vl.regions.extract`): importing it here eagerly would make
# runpy warn that the module was imported before being run, so its two public functions load on first access.
_LAZY_EXTRACT_NAMES = ("extract_region_features", "write_region_features")


def __getattr__(name: str):
    if name in _LAZY_EXTRACT_NAMES:
        from . import extract

        return getattr(extract, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "BOX_FEATURE_EXTRACTOR_SUBFOLDER",
    "BoxFeatureExtractor",
    "DetectorFeatureExtractor",
    "FIELDNAMES",
    "GLOBAL_REGION_BOX",
    "GridFeatureExtractor",
    "LEGACY_FIELDNAMES",
    "LEGACY_OPTIONAL_FIELDNAMES",
    "NORMALIZED_BOX_EPS",
    "RegionCodebook",
    "RegionFeatureError",
    "RegionFeatureExtractor",
    "RegionProcessor",
    "add_global_region",
    "attach_region_features",
    "box_area",
    "box_iou",
    "boxes_to_visual_pos",
    "check_pixel_boxes",
    "extract_region_features",
    "iter_npz_dir",
    "load_region_features",
    "normalize_boxes",
    "pad_regions",
    "read_npz",
    "read_tsv",
    "region_feature_lookup",
    "region_features_schema",
    "validate_region_inputs",
    "write_npz",
    "write_region_features",
    "write_tsv",
]
