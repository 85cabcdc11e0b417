"""The region models (InterBERT, Switch-BERT) in the `image-text-retrieval` and `itm-zero-shot-image-classification`
pipelines through the grid-region route: raw images -> `RegionProcessor` -> the retrieval head's match score, the same
ranking as calling the model on every pair; a pre-training checkpoint ranks with its ITM head (zero-shot)."""

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, pipeline

from hf_vl import (
    InterBertConfig,
    InterBertForImageAndTextRetrieval,
    InterBertForPreTraining,
    SwitchBertConfig,
    SwitchBertForImageAndTextRetrieval,
    SwitchBertForPreTraining,
)
from hf_vl.regions import RegionProcessor
from hf_vl.training import local_pretrained_path

INTERBERT = dict(hidden_size=32, num_attention_heads=4, intermediate_size=37, num_interaction_layers=1,
                 num_text_extraction_layers=1, num_image_extraction_layers=1, image_num_attention_heads=2,
                 image_intermediate_size=24, visual_feat_dim=31, visual_pos_dim=4, pooler_size=16,
                 num_region_classes=7, initializer_range=0.3)  # fmt: skip
SWITCH_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                   visual_feat_dim=31, visual_pos_dim=4, pooler_size=16, qa_hidden_size=16, switcher_hidden_size=8,
                   num_region_classes=7, initializer_range=0.3)  # fmt: skip
MODELS = {
    "interbert": (InterBertConfig, INTERBERT, InterBertForImageAndTextRetrieval, InterBertForPreTraining),
    "switch_bert": (SwitchBertConfig, SWITCH_BERT, SwitchBertForImageAndTextRetrieval, SwitchBertForPreTraining),
}
TEXTS = ["a red circle", "a blue rectangle", "a green triangle", "a yellow circle"]


def _images():
    images = []
    for index, colour in enumerate(["red", "blue", "green"]):
        image = Image.new("RGB", (64, 64), "white")
        image.paste(Image.new("RGB", (20 + 8 * index, 24), colour), (10 + 5 * index, 12))
        images.append(image)
    return images


def _pair_scores(model, processor, images, texts, use_itm=False):
    scores = torch.zeros(len(images), len(texts))
    with torch.no_grad():
        for i, image in enumerate(images):
            for j, text in enumerate(texts):
                outputs = model(**processor(images=[image], text=[text]))
                scores[i, j] = (outputs.itm_logits[0, 1] - outputs.itm_logits[0, 0]) if use_itm else outputs.logits[0, 0]
    return scores


@pytest.mark.parametrize("name", sorted(MODELS))
def test_retrieval_pipeline_ranks_like_the_model_in_both_directions(name):
    config_class, fields, retrieval_class, _ = MODELS[name]
    torch.manual_seed(0)
    model = retrieval_class(config_class(**fields)).eval()
    processor = RegionProcessor.for_model(model.config, AutoTokenizer.from_pretrained(local_pretrained_path("minilm")))
    pipe = pipeline("image-text-retrieval", model=model, processor=processor, batch_size=3)
    images = _images()
    expected = _pair_scores(model, processor, images, TEXTS)
    for i, image in enumerate(images):
        ranked = pipe(image, candidate_texts=TEXTS)
        order = expected[i].argsort(descending=True).tolist()
        assert [entry["text"] for entry in ranked] == [TEXTS[j] for j in order]
        torch.testing.assert_close(torch.tensor([entry["score"] for entry in ranked]), expected[i][order], atol=1e-5,
                                   rtol=0)  # fmt: skip
    ranked = pipe(text=TEXTS[1], candidate_images=images, top_k=2)
    order = expected[:, 1].argsort(descending=True).tolist()[:2]
    assert [entry["image_index"] for entry in ranked] == order


@pytest.mark.parametrize("name", sorted(MODELS))
def test_pretraining_checkpoint_ranks_with_its_itm_head(name, tmp_path):
    """Zero-shot: the pre-training model saved to a folder with its region processor, loaded by the pipeline."""
    config_class, fields, _, pretraining_class = MODELS[name]
    torch.manual_seed(1)
    model = pretraining_class(config_class(**fields)).eval()
    processor = RegionProcessor.for_model(model.config, AutoTokenizer.from_pretrained(local_pretrained_path("minilm")))
    model.save_pretrained(tmp_path)
    pipe = pipeline("image-text-retrieval", model=str(tmp_path), processor=processor)
    assert type(pipe.model).__name__ == pretraining_class.__name__
    images = _images()
    expected = _pair_scores(model, processor, images[:1], TEXTS, use_itm=True)[0]
    ranked = pipe(images[0], candidate_texts=TEXTS)
    assert [entry["text"] for entry in ranked] == [TEXTS[j] for j in expected.argsort(descending=True).tolist()]
    zero_shot = pipeline("itm-zero-shot-image-classification", model=model, processor=processor)
    labels = zero_shot(images[0], candidate_labels=["red", "blue", "green"])
    assert sorted(entry["label"] for entry in labels) == ["blue", "green", "red"]
    assert abs(sum(entry["score"] for entry in labels) - 1) < 1e-5
