"""InterBERT masked group modelling collators: IoU-group region masking on hand-made boxes, and together with the
span masking of words feeding InterBertForPreTraining."""

import pytest
import torch
from transformers import AutoTokenizer

import hf_vl.data.collators as collators
from hf_vl import InterBertConfig, InterBertForPreTraining
from hf_vl.data import DataCollatorForIoURegionMasking, DataCollatorForSpanMasking
from hf_vl.training import local_pretrained_path

# Hand-made boxes (x1, y1, x2, y2, area). IoU: A-B 0.90, A-E 0.73, B-E 0.64, C-E 0.46 (all > 0.4);
# A-C 0.33, B-C 0.27 (< 0.4); D overlaps nothing; F is a copy of A but padding.
BOXES = {
    "A": [0.0, 0.0, 0.5, 0.5], "B": [0.0, 0.0, 0.45, 0.5], "C": [0.25, 0.0, 0.75, 0.5],
    "D": [0.6, 0.6, 1.0, 1.0], "E": [0.1, 0.0, 0.55, 0.5], "F": [0.0, 0.0, 0.5, 0.5],
}
NAMES = list(BOXES)
EXPECTED_GROUPS = {"A": "ABE", "B": "ABE", "C": "CE", "D": "D", "E": "ABCE"}


def _example(region_labels=None):
    pos = torch.tensor([box + [(box[2] - box[0]) * (box[3] - box[1])] for box in BOXES.values()])
    example = {"input_ids": [101, 2054, 102], "visual_feats": torch.arange(1.0, 7.0)[:, None].repeat(1, 4),
               "visual_pos": pos, "visual_attention_mask": torch.tensor([1, 1, 1, 1, 1, 0])}
    if region_labels is not None:
        example["region_labels"] = region_labels
    return example


def _force_anchors(monkeypatch, anchors: str):
    """Make exactly the regions named in `anchors` draw a value below any anchor probability."""
    values = torch.tensor([[0.0 if name in anchors else 0.99 for name in NAMES]])
    monkeypatch.setattr(collators, "_random_values", lambda shape, generator: values.expand(shape).clone())


@pytest.mark.parametrize("anchor", list(EXPECTED_GROUPS))
def test_an_anchor_masks_every_region_overlapping_it_above_the_threshold(monkeypatch, anchor):
    _force_anchors(monkeypatch, anchor)
    batch = DataCollatorForIoURegionMasking(anchor_probability=0.1)([_example()])
    masked = "".join(name for name, flag in zip(NAMES, batch["mrm_mask"][0].tolist()) if flag)
    assert masked == EXPECTED_GROUPS[anchor]


def test_groups_of_several_anchors_unite_and_padding_is_never_masked(monkeypatch):
    _force_anchors(monkeypatch, "CDF")  # F is padding: not an anchor even though it drew one
    collator = DataCollatorForIoURegionMasking(anchor_probability=0.1)
    batch = collator([_example(region_labels=torch.tensor([5, 6, 7, 8, 9, 3]))])
    assert batch["mrm_mask"][0].tolist() == [False, False, True, True, True, False]  # C, D, E
    features = batch["visual_feats"][0]
    assert features[[2, 3, 4]].abs().sum() == 0 and features[[0, 1, 5], 0].tolist() == [1.0, 2.0, 6.0]
    assert batch["mrm_labels"][0].tolist() == [-100, -100, 7, 8, 9, -100]
    assert batch["visual_pos"].shape == (1, 6, 5)  # boxes are kept
    # a higher threshold splits the groups: IoU(C, E) = 0.46 no longer counts
    strict = DataCollatorForIoURegionMasking(anchor_probability=0.1, iou_threshold=0.5)([_example()])
    assert strict["mrm_mask"][0].tolist() == [False, False, True, True, False, False]


def test_skip_first_region_keeps_the_global_region(monkeypatch):
    _force_anchors(monkeypatch, "AB")  # A (row 0, the global region) is neither an anchor nor joins B's group
    batch = DataCollatorForIoURegionMasking(skip_first_region=True)([_example()])
    assert batch["mrm_mask"][0].tolist() == [False, True, False, False, True, False]


def test_anchor_rate_on_disjoint_boxes_and_seeded_reproducibility():
    grid = torch.tensor([[x / 8, y / 8, (x + 1) / 8, (y + 1) / 8, 1 / 64] for x in range(8) for y in range(8)])
    examples = [{"input_ids": [101, 102], "visual_feats": torch.ones(64, 2), "visual_pos": grid}] * 50
    first = DataCollatorForIoURegionMasking(seed=3)(examples)["mrm_mask"]
    again = DataCollatorForIoURegionMasking(seed=3)(examples)["mrm_mask"]
    other = DataCollatorForIoURegionMasking(seed=4)(examples)["mrm_mask"]
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert abs(first.float().mean().item() - 0.10) < 0.02  # disjoint boxes: only the anchors themselves


def test_distribution_targets_pass_through_and_bad_inputs():
    targets = torch.softmax(torch.randn(6, 11), -1)
    batch = DataCollatorForIoURegionMasking(anchor_probability=1.0)([_example(region_labels=targets)])
    assert torch.equal(batch["mrm_labels"][0], targets) and batch["mrm_mask"][0].tolist() == [True] * 5 + [False]
    with pytest.raises(ValueError, match="iou_threshold"):
        DataCollatorForIoURegionMasking(iou_threshold=1.5)
    with pytest.raises(ValueError, match="visual_pos"):
        DataCollatorForIoURegionMasking()([{"input_ids": [101], "visual_feats": torch.ones(2, 3)}])
    with pytest.raises(ValueError, match="region_labels"):
        DataCollatorForIoURegionMasking()([_example(region_labels=torch.tensor([1, 2]))])


def test_span_and_region_masking_feed_interbert_pretraining():
    tokenizer = AutoTokenizer.from_pretrained(local_pretrained_path("all-MiniLM-L6-v2"))
    text_collator = DataCollatorForSpanMasking(tokenizer, anchor_probability=0.5, seed=0)
    collator = DataCollatorForIoURegionMasking(anchor_probability=0.5, text_collator=text_collator, seed=0)
    captions = ["a red circle on the left of a blue square", "a green triangle"]
    examples = [dict(_example(region_labels=torch.tensor([1, 2, 3, 4, 5, 0])), **tokenizer(caption))
                for caption in captions]
    batch = collator(examples)
    assert {"input_ids", "attention_mask", "mlm_labels", "mrm_labels", "mrm_mask", "visual_feats"} <= set(batch)
    assert (batch["mlm_labels"] != -100).any() and batch["mrm_mask"].any()
    config = InterBertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_attention_heads=4,
                             intermediate_size=37, num_interaction_layers=1, num_text_extraction_layers=1,
                             num_image_extraction_layers=1, image_num_attention_heads=2, image_intermediate_size=24,
                             visual_feat_dim=4, num_region_classes=6, pooler_size=16)
    model = InterBertForPreTraining(config)
    out = model(**batch, itm_labels=torch.tensor([1, 1]))
    assert torch.isfinite(out.loss) and out.mrm_loss > 0 and out.msm_loss > 0
