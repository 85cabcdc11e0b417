"""Adaptive LXMERT published with its code: a `save_for_hub` folder loads with `trust_remote_code` in a fresh process
that cannot import hf_vl (every head, the processor, the mechanisms); the model card template."""

import json
import re

import torch
from transformers import AutoTokenizer

from hf_vl import AdaptiveLxmertConfig, AdaptiveLxmertForQuestionAnswering, AdaptiveLxmertProcessor
from hf_vl.hub import render_model_card, save_for_hub
from hf_vl.testing import hub_env, run_python
from hf_vl.training import local_pretrained_path

TINY = dict(vocab_size=30522, hidden_size=32, num_attention_heads=4, intermediate_size=37, l_layers=1, x_layers=1,
            r_layers=1, visual_feat_dim=8, num_qa_labels=3, adaptive_span=True, adaptive_span_init=0.4,
            attention_entmax=True, id2label={0: "yes", 1: "no", 2: "circle"},
            label2id={"yes": 0, "no": 1, "circle": 2})
NO_HF_VL = "        import sys; sys.modules['hf_vl'] = None\n"


def _reset_auto_classes():
    """save_for_hub registers the classes for their Auto classes: keep other tests' configs free of auto_map."""
    AdaptiveLxmertConfig._auto_class = None
    AdaptiveLxmertForQuestionAnswering._auto_class = None
    AdaptiveLxmertProcessor._auto_class = None


def test_saved_with_code_loads_with_trust_remote_code_in_fresh_process(tmp_path):
    torch.manual_seed(0)
    model = AdaptiveLxmertForQuestionAnswering(AdaptiveLxmertConfig(**TINY)).eval()
    processor = AdaptiveLxmertProcessor(AutoTokenizer.from_pretrained(local_pretrained_path("minilm")),
                                        visual_feat_dim=8)
    try:
        save_for_hub(model, tmp_path / "repo", processor=processor)
    finally:
        _reset_auto_classes()
    files = {path.name for path in (tmp_path / "repo").iterdir()}
    assert {"model.safetensors", "config.json", "modeling_adaptive_lxmert.py", "configuration_adaptive_lxmert.py",
            "processing_adaptive_lxmert.py", "processor_config.json"} <= files
    auto_map = json.loads((tmp_path / "repo" / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForPreTraining"] == "modeling_adaptive_lxmert.AdaptiveLxmertForPreTraining"
    generator = torch.Generator().manual_seed(1)
    corner = torch.rand(2, 4, 2, generator=generator) * 0.5
    inputs = dict(input_ids=torch.tensor([[101, 2003, 2045, 102], [101, 2054, 102, 0]]),
                  attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
                  visual_feats=torch.randn(2, 4, 8, generator=generator), visual_pos=torch.cat([corner, corner + 0.3], -1),
                  visual_attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]))
    with torch.no_grad():
        torch.save({"inputs": inputs, "scores": model(**inputs).question_answering_score}, tmp_path / "ref.pt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    repo = str(tmp_path / "repo")
    run_python(
        NO_HF_VL
        + f"""        import torch
        from transformers import AutoModel, AutoModelForPreTraining, AutoModelForVisualQuestionAnswering, AutoProcessor
        model = AutoModelForVisualQuestionAnswering.from_pretrained({repo!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert type(model).__name__ == "AdaptiveLxmertForQuestionAnswering" and len(model.learned_alphas()) == 5
        ref = torch.load({str(tmp_path / "ref.pt")!r})
        with torch.no_grad():
            torch.testing.assert_close(model(**ref["inputs"]).question_answering_score, ref["scores"], atol=1e-5, rtol=0)
        assert type(AutoModel.from_pretrained({repo!r}, trust_remote_code=True)).__name__ == "AdaptiveLxmertModel"
        pretraining = AutoModelForPreTraining.from_pretrained({repo!r}, trust_remote_code=True)
        assert pretraining.cls.predictions.decoder.weight is pretraining.lxmert.embeddings.word_embeddings.weight
        processor = AutoProcessor.from_pretrained({repo!r}, trust_remote_code=True)
        assert type(processor).__name__ == "AdaptiveLxmertProcessor", type(processor)
        print("REMOTE CODE OK")
        """,
        cwd=elsewhere,
    )


def test_model_card_template_fills_every_placeholder(tmp_path):
    model = AdaptiveLxmertForQuestionAnswering(AdaptiveLxmertConfig(**TINY))
    card = render_model_card(
        model, model_name="adaptive-lxmert-easy-vqa", repo_id="user/adaptive-lxmert-easy-vqa",
        tokenizer_id="bert-base-uncased", intended_uses="Testing.", max_text_len=20, visual_feat_dim=8,
        visual_pos_dim=4, mechanisms="adaptive span, entmax", training_data="none", evaluation_results="none",
        provenance="random initialisation",
    )
    assert card.startswith("---\n") and "AdaptiveLxmertForQuestionAnswering" in card
    assert not re.search(r"\$\{?[A-Za-z_]", card)


def test_push_to_hub_with_code_loads_with_trust_remote_code_in_fresh_process(local_hub, tmp_path):
    """The same model through the Hub API (a local Hub server): `push_to_hub_with_code`, then a fresh process that
    cannot import hf_vl loads the repository id with `trust_remote_code` and reproduces the scores."""
    repo = local_hub.new_repo_id("adaptive-lxmert-vqa")
    env = hub_env(local_hub, hf_home=tmp_path / "hf_home")
    run_python(
        f"""
        import json, torch
        from transformers import AutoTokenizer
        from hf_vl import AdaptiveLxmertConfig, AdaptiveLxmertForQuestionAnswering, AdaptiveLxmertProcessor
        from hf_vl.hub import push_to_hub_with_code
        torch.manual_seed(0)
        config = AdaptiveLxmertConfig(**json.loads({json.dumps(json.dumps(TINY))}), cross_layerdrop=0.5)
        model = AdaptiveLxmertForQuestionAnswering(config).eval()
        processor = AdaptiveLxmertProcessor(AutoTokenizer.from_pretrained({local_pretrained_path("minilm")!r}),
                                            visual_feat_dim=8)
        push_to_hub_with_code(model, {repo!r}, processor=processor, commit_message="Adaptive LXMERT with code")
        generator = torch.Generator().manual_seed(1)
        corner = torch.rand(2, 4, 2, generator=generator) * 0.5
        inputs = processor(text=["is there a circle?", "what shape?"], visual_feats=torch.randn(2, 4, 8, generator=generator),
                           visual_pos=torch.cat([corner, corner + 0.3], -1), return_tensors="pt")
        with torch.no_grad():
            scores = model(**inputs).question_answering_score
        torch.save({{"inputs": dict(inputs), "scores": scores}}, {str(tmp_path / "ref.pt")!r})
        """,
        env=env,
        cwd=tmp_path,
    )
    files = set(local_hub.list_files(repo))
    assert {"model.safetensors", "config.json", "modeling_adaptive_lxmert.py", "configuration_adaptive_lxmert.py",
            "processing_adaptive_lxmert.py", "processor_config.json"} <= files
    config = json.loads(local_hub.read_file(repo, "config.json"))
    assert config["auto_map"]["AutoModelForVisualQuestionAnswering"] == (
        "modeling_adaptive_lxmert.AdaptiveLxmertForQuestionAnswering"
    )
    assert config["adaptive_span"] and config["attention_entmax"] and config["cross_layerdrop"] == 0.5

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env.pop("PYTHONPATH", None)
    run_python(
        NO_HF_VL
        + f"""        import torch
        from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor
        model = AutoModelForVisualQuestionAnswering.from_pretrained({repo!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        ref = torch.load({str(tmp_path / "ref.pt")!r})
        with torch.no_grad():  # LayerDrop is off in eval: the same scores every call
            for _ in range(2):
                torch.testing.assert_close(model(**ref["inputs"]).question_answering_score, ref["scores"],
                                           atol=1e-5, rtol=0)
        processor = AutoProcessor.from_pretrained({repo!r}, trust_remote_code=True)
        assert type(processor).__name__ == "AdaptiveLxmertProcessor", type(processor)
        print("REMOTE CODE OK")
        """,
        env=env,
        cwd=elsewhere,
    )
