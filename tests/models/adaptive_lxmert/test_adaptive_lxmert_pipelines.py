"""Adaptive LXMERT in hf_vl's `vl-question-answering` pipeline through the grid-region route (RegionProcessor)."""

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, pipeline

from hf_vl import AdaptiveLxmertConfig, AdaptiveLxmertForQuestionAnswering
from hf_vl.regions import RegionProcessor
from hf_vl.training import local_pretrained_path


@pytest.mark.parametrize("problem_type, normalise", [(None, torch.sigmoid),
                                                     ("single_label_classification", lambda x: x.softmax(-1))])
def test_vqa_pipeline_with_grid_regions_matches_the_model(problem_type, normalise):
    tokenizer = AutoTokenizer.from_pretrained(local_pretrained_path("minilm"))
    answers = ["red", "blue", "circle"]
    config = AdaptiveLxmertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_attention_heads=4, intermediate_size=37, l_layers=1,
        x_layers=1, r_layers=1, visual_feat_dim=16, num_qa_labels=3, initializer_range=0.5, adaptive_span=True,
        attention_entmax=True, id2label=dict(enumerate(answers)), label2id={a: i for i, a in enumerate(answers)},
        problem_type=problem_type,
    )
    torch.manual_seed(0)
    model = AdaptiveLxmertForQuestionAnswering(config).eval()
    processor = RegionProcessor.for_model(config, tokenizer)
    pipe = pipeline("vl-question-answering", model=model, processor=processor)
    image = Image.new("RGB", (64, 48), "red")
    result = pipe(image=image, question="what color is it?", top_k=3)
    inputs = processor(images=[image], text=["what color is it?"])
    assert inputs["visual_pos"].shape[-1] == 4 and inputs["visual_feats"].shape[-1] == 16
    with torch.no_grad():
        scores = normalise(model(**inputs).question_answering_score)[0]
    expected = sorted(zip(answers, scores.tolist()), key=lambda pair: -pair[1])
    assert [r["answer"] for r in result] == [answer for answer, _ in expected]
    for got, (_, score) in zip(result, expected):
        assert abs(got["score"] - score) < 1e-5
