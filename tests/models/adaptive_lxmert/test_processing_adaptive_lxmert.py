"""AdaptiveLxmertProcessor: BERT tokenizer + precomputed regions, AutoProcessor round trip, feeding the model."""

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, AutoTokenizer

from hf_vl import AdaptiveLxmertConfig, AdaptiveLxmertForQuestionAnswering, AdaptiveLxmertProcessor
from hf_vl.training import local_pretrained_path


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(local_pretrained_path("all-MiniLM-L6-v2"))


def test_pads_regions_keeps_4d_boxes_and_tokenizes(tokenizer):
    processor = AdaptiveLxmertProcessor(tokenizer, visual_feat_dim=8)
    out = processor(text=["is it red?", "a blue square on the left"],
                    visual_feats=[np.ones((3, 8)), 2 * np.ones((2, 8))],
                    visual_pos=[np.array([[0.0, 0.0, 0.5, 0.4]] * 3), np.array([[0.2, 0.0, 1.0, 1.0, 0.8]] * 2)])
    assert out["visual_feats"].shape == (2, 3, 8) and out["visual_pos"].shape == (2, 3, 4)
    assert out["visual_attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    torch.testing.assert_close(out["visual_pos"][1, 0], torch.tensor([0.2, 0.0, 1.0, 1.0]))  # area column dropped
    assert out["visual_pos"][1, 2].abs().sum() == 0 and out["visual_feats"][1, 2].abs().sum() == 0
    expected = tokenizer(["is it red?", "a blue square on the left"], padding="longest", return_tensors="pt")
    assert torch.equal(out["input_ids"], expected["input_ids"])
    long = processor(text="word " * 40)
    assert long["input_ids"].shape == (1, 20)  # LXMERT's 20-token questions
    five = AdaptiveLxmertProcessor(tokenizer, visual_pos_dim=5)(visual_feats=np.ones((2, 8)),
                                                                 visual_pos=np.array([[0.0, 0.0, 0.5, 0.4]] * 2))
    torch.testing.assert_close(five["visual_pos"][0, 0], torch.tensor([0.0, 0.0, 0.5, 0.4, 0.2]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(visual_feats=np.ones((2, 8))), "visual_pos"),
        (dict(visual_feats=np.ones((2, 6)), visual_pos=np.zeros((2, 4))), "visual_feat_dim=8"),
        (dict(visual_feats=np.ones((2, 8)), visual_pos=np.full((2, 4), 2.0)), "normalised"),
        (dict(visual_feats=np.ones((2, 8)), visual_pos=np.array([[0.5, 0, 0.1, 1]] * 2)), "x1 <= x2"),
        (dict(visual_feats=np.full((2, 8), np.nan), visual_pos=np.zeros((2, 4))), "NaN"),
        (dict(visual_feats=np.ones((2, 8)), visual_pos=np.zeros((3, 4))), "visual_pos"),
        (dict(text=["a", "b"], visual_feats=np.ones((2, 8)), visual_pos=np.zeros((2, 4))), "2 examples"),
        (dict(text=[""]), "non-empty"),
        (dict(), "at least one"),
    ],
)
def test_bad_inputs(tokenizer, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        AdaptiveLxmertProcessor(tokenizer, visual_feat_dim=8)(**kwargs)


def test_auto_processor_round_trip_and_model_forward(tokenizer, tmp_path):
    config = AdaptiveLxmertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_attention_heads=4,
                                  intermediate_size=37, l_layers=1, x_layers=1, r_layers=1, visual_feat_dim=8,
                                  num_qa_labels=3)
    model = AdaptiveLxmertForQuestionAnswering(config).eval()
    processor = AdaptiveLxmertProcessor(tokenizer, visual_feat_dim=8)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is AdaptiveLxmertProcessor and loaded.visual_feat_dim == 8 and loaded.visual_pos_dim == 4
    inputs = loaded(text="what colour is the circle?", visual_feats=np.random.rand(4, 8),
                    visual_pos=np.array([[0.1, 0.1, 0.4, 0.5]] * 4))
    assert set(inputs) == set(loaded.model_input_names)
    with torch.no_grad():
        assert model(**inputs).question_answering_score.shape == (1, 3)
