"""InterBERT in hf_vl's `vl-question-answering` pipeline through the grid-region route (RegionProcessor)."""

import torch
from PIL import Image
from transformers import AutoTokenizer, pipeline

from hf_vl import InterBertConfig, InterBertForQuestionAnswering
from hf_vl.regions import RegionProcessor
from hf_vl.training import local_pretrained_path


def test_vqa_pipeline_with_grid_regions_matches_the_model():
    tokenizer = AutoTokenizer.from_pretrained(local_pretrained_path("minilm"))
    answers = ["red", "blue", "circle"]
    config = InterBertConfig(
        hidden_size=32, num_attention_heads=4, intermediate_size=37, num_interaction_layers=1,
        num_text_extraction_layers=1, num_image_extraction_layers=1, image_num_attention_heads=2,
        image_intermediate_size=24, visual_feat_dim=16, visual_pos_dim=5, pooler_size=16, initializer_range=0.5,
        id2label=dict(enumerate(answers)), label2id={a: i for i, a in enumerate(answers)},
    )
    torch.manual_seed(0)
    model = InterBertForQuestionAnswering(config).eval()
    processor = RegionProcessor.for_model(config, tokenizer)
    pipe = pipeline("vl-question-answering", model=model, processor=processor)
    image = Image.new("RGB", (64, 48), "red")
    result = pipe(image=image, question="what color is it?", top_k=3)
    inputs = processor(images=[image], text=["what color is it?"])
    assert inputs["visual_pos"].shape[-1] == 5 and inputs["visual_feats"].shape[-1] == 16
    with torch.no_grad():
        scores = torch.sigmoid(model(**inputs).logits)[0]  # multi-label (soft-score BCE) head
    expected = sorted(zip(answers, scores.tolist()), key=lambda pair: -pair[1])
    assert [r["answer"] for r in result] == [answer for answer, _ in expected]
    for got, (_, score) in zip(result, expected):
        assert abs(got["score"] - score) < 1e-5
