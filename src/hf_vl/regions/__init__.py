"""Detector-region features for the region-based models (adaptive LXMERT, InterBERT, Switch-BERT).

The models read LXMERT's inputs: ``visual_feats (B, N, feat_dim)``, ``visual_pos (B, N, pos_dim)`` (boxes
normalised to ``[0, 1]``; ``pos_dim`` 4 = x1, y1, x2, y2, 5 = + area) and ``visual_attention_mask (B, N)``.

- :mod:`hf_vl.regions.boxes`: box conventions (pixel -> normalised -> ``visual_pos``), IoU, the global
  region, padding, and the input validation shared by processors and models.
- :mod:`hf_vl.regions.formats`: the bottom-up-attention TSV layouts of the LXMERT / ViLBERT / VOLTA
  releases, per-image ``.npz`` files, and loading them as ``datasets`` datasets joined to VQA data.
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

__all__ = [
    "FIELDNAMES",
    "GLOBAL_REGION_BOX",
    "LEGACY_FIELDNAMES",
    "LEGACY_OPTIONAL_FIELDNAMES",
    "NORMALIZED_BOX_EPS",
    "RegionFeatureError",
    "add_global_region",
    "attach_region_features",
    "box_area",
    "box_iou",
    "boxes_to_visual_pos",
    "check_pixel_boxes",
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
    "write_tsv",
]
