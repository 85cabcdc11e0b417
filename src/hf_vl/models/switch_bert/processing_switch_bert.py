"""Processor for Switch-BERT: a BERT uncased tokenizer + detector regions behind one call.

Regions come as features and boxes already normalised to [0, 1] (a detector's output divided by the image size, or
`hf_vl.regions`' extractors); the processor pads them to one length, adds the area to 4-d boxes when the model reads
5-d locations, and checks them. The [IMG] (global) region is not added here: `SwitchBertModel` prepends it
(`config.prepend_global_region`). Raw images go through `hf_vl.regions.RegionProcessor` (its grid or detector
extractor holds weights, which a `ProcessorMixin` cannot) and then this processor.

This file is shipped to the Hub as remote code: it imports only numpy, torch and the public `transformers` API.
"""

from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin, Unpack


# Copied from hf_vl.models.interbert.processing_interbert.InterBertProcessorKwargs with InterBert->SwitchBert
class SwitchBertProcessorKwargs(ProcessingKwargs, total=False):
    _defaults = {"text_kwargs": {"padding": "longest", "truncation": True, "max_length": 36}}


# Copied from hf_vl.models.interbert.processing_interbert._per_image
def _per_image(value: Any, name: str) -> list[torch.Tensor]:
    """`(B, N, D)` / `(N, D)` arrays or a list of per-image `(N_i, D)` arrays -> a list of float tensors."""
    if isinstance(value, (list, tuple)) and value and all(np.ndim(item) == 2 for item in value):
        return [torch.as_tensor(np.asarray(item), dtype=torch.float32) for item in value]
    array = torch.as_tensor(np.asarray(value), dtype=torch.float32)
    if array.dim() == 2:
        return [array]
    if array.dim() != 3:
        raise ValueError(f"`{name}` must be (num_regions, dim), (batch, num_regions, dim) or a list of per-image "
                         f"(num_regions, dim) arrays; got shape {tuple(array.shape)}.")
    return list(array)


# Copied from hf_vl.models.interbert.processing_interbert.InterBertProcessor with InterBert->SwitchBert, InterBERT->Switch-BERT, interbert->switch_bert
class SwitchBertProcessor(ProcessorMixin):
    r"""Constructs the Switch-BERT processor: any BERT-style tokenizer for text, precomputed regions for the image.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): the tokenizer (BERT uncased WordPiece; loaded with `AutoTokenizer`).
        visual_feat_dim (`int`, *optional*): the model's region feature size; checked when given.
        visual_pos_dim (`int`, defaults to 5): the model's location size: 4 (`x1, y1, x2, y2`) or 5 (+ area).

    Example:

    ```python
    >>> processor = SwitchBertProcessor(tokenizer, visual_feat_dim=2048)
    >>> inputs = processor(text="what is on the table?", visual_feats=features, visual_pos=boxes)  # (36, 2048), (36, 4)
    >>> sorted(inputs)
    ['attention_mask', 'input_ids', 'token_type_ids', 'visual_attention_mask', 'visual_feats', 'visual_pos']
    ```
    """

    valid_processor_kwargs = SwitchBertProcessorKwargs

    def __init__(self, tokenizer=None, visual_feat_dim: int | None = None, visual_pos_dim: int = 5, **kwargs):
        if visual_pos_dim not in (4, 5) or isinstance(visual_pos_dim, bool):
            raise ValueError(f"`visual_pos_dim` must be 4 or 5, got {visual_pos_dim!r}.")
        if visual_feat_dim is not None and (isinstance(visual_feat_dim, bool) or not isinstance(visual_feat_dim, int)
                                            or visual_feat_dim < 1):
            raise ValueError(f"`visual_feat_dim` must be a positive int or None, got {visual_feat_dim!r}.")
        super().__init__(tokenizer, **kwargs)
        self.visual_feat_dim = visual_feat_dim
        self.visual_pos_dim = visual_pos_dim

    @property
    def model_input_names(self) -> list[str]:
        return list(self.tokenizer.model_input_names) + ["visual_feats", "visual_pos", "visual_attention_mask"]

    def __call__(self, text=None, visual_feats=None, visual_pos=None, visual_attention_mask=None,
                 **kwargs: Unpack[SwitchBertProcessorKwargs]) -> BatchFeature:
        """Tokenize `text` (one string or a list) and pad / check the regions of each image.

        Returns a `BatchFeature` of torch tensors: `input_ids`, `attention_mask`, `token_type_ids` and `visual_feats
        (B, N, D)`, `visual_pos (B, N, visual_pos_dim)`, `visual_attention_mask (B, N)` (N = most regions of an image).
        """
        if text is None and visual_feats is None:
            raise ValueError("You have to specify at least one of `text` or `visual_feats`.")
        merged = self._merge_kwargs(SwitchBertProcessorKwargs, tokenizer_init_kwargs={}, **kwargs)
        data = {}
        if text is not None:
            if not (isinstance(text, str) or (isinstance(text, (list, tuple)) and text and
                                              all(isinstance(t, str) and t.strip() for t in text))):
                raise TypeError(f"`text` must be a non-empty string or a list of them, got {text!r}.")
            text_kwargs = {**merged["text_kwargs"], "return_tensors": "pt"}
            data.update(self.tokenizer(text, **text_kwargs))
        if visual_feats is not None:
            data.update(self._regions(visual_feats, visual_pos, visual_attention_mask))
            num_texts = data["input_ids"].shape[0] if "input_ids" in data else None
            if num_texts is not None and num_texts != data["visual_feats"].shape[0]:
                raise ValueError(f"`text` has {num_texts} examples but the regions {data['visual_feats'].shape[0]}.")
        return BatchFeature(data=data, tensor_type="pt")

    def _regions(self, visual_feats, visual_pos, visual_attention_mask) -> dict[str, torch.Tensor]:
        if visual_pos is None:
            raise ValueError("`visual_feats` needs `visual_pos` (boxes normalised to [0, 1]).")
        feats, boxes = _per_image(visual_feats, "visual_feats"), _per_image(visual_pos, "visual_pos")
        if len(feats) != len(boxes):
            raise ValueError(f"`visual_feats` has {len(feats)} images but `visual_pos` {len(boxes)}.")
        masks = None
        if visual_attention_mask is not None:
            masks = torch.as_tensor(np.asarray(visual_attention_mask), dtype=torch.long).reshape(len(feats), -1)
        num_regions = max(f.shape[0] for f in feats)
        out_feats = torch.zeros(len(feats), num_regions, feats[0].shape[1])
        out_pos = torch.zeros(len(feats), num_regions, self.visual_pos_dim)
        out_mask = torch.zeros(len(feats), num_regions, dtype=torch.long)
        for index, (feat, box) in enumerate(zip(feats, boxes)):
            name = f"visual_pos[{index}]"
            if box.shape[0] != feat.shape[0] or box.shape[1] not in (4, 5):
                raise ValueError(f"`{name}` must be ({feat.shape[0]}, 4 or 5), got {tuple(box.shape)}.")
            if not bool(torch.isfinite(feat).all()):
                raise ValueError(f"`visual_feats[{index}]` contains NaN or inf.")
            if self.visual_feat_dim is not None and feat.shape[1] != self.visual_feat_dim:
                raise ValueError(f"`visual_feats[{index}]` has {feat.shape[1]} features, the model expects "
                                 f"visual_feat_dim={self.visual_feat_dim}.")
            corners = box[:, :4]
            if not bool(torch.isfinite(corners).all()) or corners.min() < -1e-5 or corners.max() > 1 + 1e-5 or bool(
                ((corners[:, 2] < corners[:, 0]) | (corners[:, 3] < corners[:, 1])).any()
            ):
                raise ValueError(f"`{name}` must hold (x1, y1, x2, y2) boxes normalised to [0, 1] with x1 <= x2, "
                                 "y1 <= y2 (divide pixel boxes by the image width and height).")
            if self.visual_pos_dim == 5:
                area = box[:, 4:5] if box.shape[1] == 5 else (
                    (corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1]))[:, None]
                box = torch.cat([corners, area], dim=1)
            else:
                box = corners
            count = feat.shape[0]
            out_feats[index, :count], out_pos[index, :count] = feat, box
            out_mask[index, :count] = 1 if masks is None else masks[index, :count]
        return {"visual_feats": out_feats, "visual_pos": out_pos, "visual_attention_mask": out_mask}


__all__ = ["SwitchBertProcessor"]
