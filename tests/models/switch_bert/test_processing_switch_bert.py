"""SwitchBertProcessor: tokenizer + regions (precomputed, and raw images through hf_vl.regions' grid extractor),
AutoProcessor round trip, feeding the model."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, AutoTokenizer

from hf_vl import SwitchBertConfig, SwitchBertForQuestionAnswering, SwitchBertProcessor
from hf_vl.regions import GridFeatureExtractor
from hf_vl.training import local_pretrained_path


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(local_pretrained_path("all-MiniLM-L6-v2"))


def _model(visual_feat_dim=8, visual_pos_dim=5):
    config = SwitchBertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                              visual_feat_dim=visual_feat_dim, visual_pos_dim=visual_pos_dim, pooler_size=16,
                              qa_hidden_size=16, switcher_hidden_size=8, num_labels=3)
    return SwitchBertForQuestionAnswering(config).eval()


def test_pads_regions_adds_area_and_tokenizes(tokenizer):
    processor = SwitchBertProcessor(tokenizer, visual_feat_dim=8)
    out = processor(text=["is it red?", "a blue square on the left"],
                    visual_feats=[np.ones((3, 8)), 2 * np.ones((2, 8))],
                    visual_pos=[np.array([[0.0, 0.0, 0.5, 0.4]] * 3), np.array([[0.2, 0.0, 1.0, 1.0]] * 2)])
    assert out["visual_feats"].shape == (2, 3, 8) and out["visual_pos"].shape == (2, 3, 5)
    assert out["visual_attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    torch.testing.assert_close(out["visual_pos"][0, 0], torch.tensor([0.0, 0.0, 0.5, 0.4, 0.2]))
    expected = tokenizer(["is it red?", "a blue square on the left"], padding="longest", return_tensors="pt")
    assert torch.equal(out["input_ids"], expected["input_ids"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(visual_feats=np.ones((2, 8))), "visual_pos"),
        (dict(visual_feats=np.ones((2, 6)), visual_pos=np.zeros((2, 4))), "visual_feat_dim=8"),
        (dict(visual_feats=np.ones((2, 8)), visual_pos=np.full((2, 4), 2.0)), "normalised"),
        (dict(visual_feats=np.full((2, 8), np.nan), visual_pos=np.zeros((2, 4))), "NaN"),
        (dict(text=["a", "b"], visual_feats=np.ones((2, 8)), visual_pos=np.zeros((2, 4))), "2 examples"),
        (dict(), "at least one"),
    ],
)
def test_bad_inputs_name_the_argument(tokenizer, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        SwitchBertProcessor(tokenizer, visual_feat_dim=8)(**kwargs)


def test_auto_processor_round_trip_and_model_forward(tokenizer, tmp_path):
    model = _model()
    SwitchBertProcessor(tokenizer, visual_feat_dim=8).save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is SwitchBertProcessor and loaded.visual_feat_dim == 8 and loaded.visual_pos_dim == 5
    inputs = loaded(text="what colour is the circle?", visual_feats=np.random.rand(4, 8),
                    visual_pos=np.array([[0.1, 0.1, 0.4, 0.5]] * 4))
    assert set(inputs) == set(loaded.model_input_names)
    with torch.no_grad():
        outputs = model(**inputs)
    assert outputs.logits.shape == (1, 3) and outputs.attention_modes.shape == (1, 2)


def test_raw_image_route_through_the_grid_extractor(tokenizer):
    """Raw images -> hf_vl.regions' GridFeatureExtractor (regions) -> the processor -> the model."""
    model = _model(visual_feat_dim=8, visual_pos_dim=4)
    extractor = GridFeatureExtractor.for_model(model.config)
    images = [Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 255))]
    regions = extractor(images)
    processor = SwitchBertProcessor(tokenizer, visual_feat_dim=8, visual_pos_dim=4)
    inputs = processor(text=["is it red?", "is it blue?"], visual_feats=regions["visual_feats"],
                       visual_pos=regions["visual_pos"])
    assert inputs["visual_feats"].shape[:2] == inputs["visual_pos"].shape[:2]
    with torch.no_grad():
        assert model(**inputs).logits.shape == (2, 3)
