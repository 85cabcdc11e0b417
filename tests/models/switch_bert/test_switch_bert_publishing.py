"""Switch-BERT on the Hub: push with code to a local Hub server, load with `trust_remote_code` in a fresh process that
cannot import hf_vl (same logits and routing), the model card template."""

import json
import re

from hf_vl import SwitchBertConfig, SwitchBertForQuestionAnswering
from hf_vl.hub import render_model_card, save_for_hub
from hf_vl.testing import hub_env, run_python
from hf_vl.training import local_pretrained_path

TINY = dict(
    vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64, visual_feat_dim=8, visual_pos_dim=5, num_region_classes=7, pooler_size=16,
    qa_hidden_size=16, switcher_hidden_size=8, id2label={0: "yes", 1: "no", 2: "circle"},
    label2id={"yes": 0, "no": 1, "circle": 2},
)
NO_HF_VL = "        import sys; sys.modules['hf_vl'] = None\n"


def test_push_to_hub_with_code_loads_with_trust_remote_code_in_fresh_process(local_hub, tmp_path):
    repo = local_hub.new_repo_id("switch-bert-vqa")
    env = hub_env(local_hub, hf_home=tmp_path / "hf_home")
    run_python(
        f"""
        import json, torch
        from transformers import AutoTokenizer
        from hf_vl import SwitchBertConfig, SwitchBertForQuestionAnswering, SwitchBertProcessor
        from hf_vl.hub import push_to_hub_with_code
        torch.manual_seed(0)
        model = SwitchBertForQuestionAnswering(SwitchBertConfig(**json.loads({json.dumps(json.dumps(TINY))}))).eval()
        processor = SwitchBertProcessor(AutoTokenizer.from_pretrained({local_pretrained_path("minilm")!r}), visual_feat_dim=8)
        push_to_hub_with_code(model, {repo!r}, processor=processor, commit_message="Switch-BERT with code")
        generator = torch.Generator().manual_seed(1)
        corner = torch.rand(2, 4, 2, generator=generator) * 0.5
        boxes = torch.cat([corner, corner + 0.3, torch.full((2, 4, 1), 0.09)], -1)
        inputs = dict(input_ids=torch.tensor([[101, 2003, 2045, 102], [101, 2054, 102, 0]]),
                      attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
                      visual_feats=torch.randn(2, 4, 8, generator=generator), visual_pos=boxes,
                      visual_attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]))
        with torch.no_grad():
            outputs = model(**inputs)
        torch.save({{"inputs": inputs, "logits": outputs.logits, "modes": outputs.attention_modes,
                     "input_choices": outputs.input_choices}}, {str(tmp_path / "ref.pt")!r})
        """,
        env=env,
        cwd=tmp_path,
    )
    files = set(local_hub.list_files(repo))
    assert {"model.safetensors", "config.json", "modeling_switch_bert.py", "configuration_switch_bert.py",
            "processing_switch_bert.py", "processor_config.json"} <= files
    auto_map = json.loads(local_hub.read_file(repo, "config.json"))["auto_map"]
    assert auto_map["AutoModelForVisualQuestionAnswering"] == "modeling_switch_bert.SwitchBertForQuestionAnswering"
    assert auto_map["AutoModelForPreTraining"] == "modeling_switch_bert.SwitchBertForPreTraining"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env.pop("PYTHONPATH", None)
    run_python(
        NO_HF_VL
        + f"""        import torch
        from transformers import AutoModel, AutoModelForVisualQuestionAnswering, AutoProcessor
        model = AutoModelForVisualQuestionAnswering.from_pretrained({repo!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert type(model).__name__ == "SwitchBertForQuestionAnswering"
        ref = torch.load({str(tmp_path / "ref.pt")!r})
        with torch.no_grad():
            outputs = model(**ref["inputs"])
        torch.testing.assert_close(outputs.logits, ref["logits"], atol=1e-5, rtol=0)
        assert torch.equal(outputs.attention_modes, ref["modes"])
        assert torch.equal(outputs.input_choices, ref["input_choices"])
        assert type(AutoModel.from_pretrained({repo!r}, trust_remote_code=True)).__name__ == "SwitchBertModel"
        processor = AutoProcessor.from_pretrained({repo!r}, trust_remote_code=True)
        assert type(processor).__name__ == "SwitchBertProcessor", type(processor)
        print("REMOTE CODE OK")
        """,
        env=env,
        cwd=elsewhere,
    )


def test_model_card_template_fills_every_placeholder(tmp_path):
    model = SwitchBertForQuestionAnswering(SwitchBertConfig(**TINY))
    card = render_model_card(
        model, model_name="switch-bert-easy-vqa", repo_id="user/switch-bert-easy-vqa",
        tokenizer_id="bert-base-uncased", intended_uses="Testing.", max_text_len=20, visual_feat_dim=8,
        visual_pos_dim=5, switch_top_k=4, global_region="prepended by the model (`prepend_global_region=True`)",
        learned_architectures="not measured", training_data="none", evaluation_results="none",
        provenance="random initialisation",
    )
    assert card.startswith("---\n") and "SwitchBertForQuestionAnswering" in card and "switch-bert-easy-vqa" in card
    assert not re.search(r"\$\{?[A-Za-z_]", card)
    try:
        save_for_hub(model, tmp_path / "saved", model_card=card)
    finally:  # save_for_hub registers the classes for their Auto classes: keep other tests' configs free of auto_map
        SwitchBertConfig._auto_class = None
        SwitchBertForQuestionAnswering._auto_class = None
    assert (tmp_path / "saved" / "README.md").read_text(encoding="utf-8") == card
    assert (tmp_path / "saved" / "modeling_switch_bert.py").is_file()
