"""InterBERT end to end: initialisation from a real BERT-layout checkpoint (all-MiniLM-L6-v2), Hub publishing with
code (local Hub server, fresh process that cannot import hf_vl), the model card template."""

import json
import re

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from hf_vl import InterBertForPreTraining, InterBertForQuestionAnswering
from hf_vl.hub import render_model_card, save_for_hub
from hf_vl.regions import RegionProcessor
from hf_vl.testing import hub_env, run_python
from hf_vl.training import local_pretrained_path

TINY = dict(
    vocab_size=30522, hidden_size=32, num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
    num_interaction_layers=1, num_text_extraction_layers=1, num_image_extraction_layers=1, image_num_attention_heads=2,
    image_intermediate_size=24, visual_feat_dim=8, visual_pos_dim=5, num_region_classes=7, pooler_size=16,
    id2label={0: "yes", 1: "no", 2: "circle"}, label2id={"yes": 0, "no": 1, "circle": 2},
)
NO_HF_VL = "        import sys; sys.modules['hf_vl'] = None\n"


def test_from_bert_pretrained_with_real_minilm():
    path = local_pretrained_path("all-MiniLM-L6-v2")
    model = InterBertForQuestionAnswering.from_bert_pretrained(
        path, visual_feat_dim=8, visual_pos_dim=5, pooler_size=64, num_labels=4
    ).eval()
    config = model.config
    assert (config.hidden_size, config.num_interaction_layers, config.num_text_extraction_layers) == (384, 3, 3)
    assert config.num_image_extraction_layers == 3 and config.intermediate_size == 1536
    bert = AutoModel.from_pretrained(path)
    base = model.interbert
    for name, param in bert.embeddings.named_parameters():
        assert torch.equal(base.embeddings.get_parameter(name), param), name
    for index in range(6):
        layer = base.interaction_layers[index] if index < 3 else base.text_extraction_layers[index - 3]
        for name, param in bert.encoder.layer[index].named_parameters():
            assert torch.equal(layer.get_parameter(name), param), (index, name)
    # new weights: N(0, 0.02) (paper), not copied from anything
    image_query = base.image_extraction_layers[0].attention.self.query.weight.detach()
    assert abs(float(image_query.std()) - 0.02) < 0.003
    assert not any(torch.equal(image_query, layer.attention.self.query.weight) for layer in bert.encoder.layer)

    # the text path of InterBERT initialised from MiniLM is BERT's own forward for a text-only input of one layer split
    tokenizer = AutoTokenizer.from_pretrained(path)
    text = tokenizer(["is there a red circle?", "no"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = base(input_ids=text["input_ids"], attention_mask=text["attention_mask"]).text_features
        theirs = bert(**text).last_hidden_state
    mask = text["attention_mask"].bool()
    torch.testing.assert_close(ours[mask], theirs[mask], atol=1e-4, rtol=1e-4)

    processor = RegionProcessor(tokenizer, feature_extractor=None, feat_dim=8, pos_dim=5)
    boxes = np.array([[0.1, 0.1, 0.5, 0.6, 0.2], [0.3, 0.2, 0.9, 0.9, 0.42]], dtype="float32")
    inputs = processor(text="is there a circle?", visual_feats=np.ones((2, 8), "float32"), visual_pos=boxes)
    with torch.no_grad():
        assert model(**inputs).logits.shape == (1, 4)
    pretraining = InterBertForPreTraining.from_bert_pretrained(path, num_interaction_layers=2, visual_feat_dim=8)
    assert pretraining.config.num_text_extraction_layers == 4  # the rest of the 6 layers
    assert pretraining.msm_head.decoder.weight is pretraining.interbert.embeddings.word_embeddings.weight


def test_push_to_hub_with_code_loads_with_trust_remote_code_in_fresh_process(local_hub, tmp_path):
    repo = local_hub.new_repo_id("interbert-vqa")
    env = hub_env(local_hub, hf_home=tmp_path / "hf_home")
    run_python(
        f"""
        import json, torch
        from transformers import AutoTokenizer
        from hf_vl import InterBertConfig, InterBertForQuestionAnswering, InterBertProcessor
        from hf_vl.hub import push_to_hub_with_code
        torch.manual_seed(0)
        model = InterBertForQuestionAnswering(InterBertConfig(**json.loads({json.dumps(json.dumps(TINY))}))).eval()
        processor = InterBertProcessor(AutoTokenizer.from_pretrained({local_pretrained_path("minilm")!r}), visual_feat_dim=8)
        push_to_hub_with_code(model, {repo!r}, processor=processor, commit_message="InterBERT with code")
        processed = processor(text="is there a circle?", visual_feats=torch.ones(3, 8),
                              visual_pos=torch.tensor([[0.1, 0.2, 0.5, 0.6]] * 3))
        generator = torch.Generator().manual_seed(1)
        corner = torch.rand(2, 4, 2, generator=generator) * 0.5
        boxes = torch.cat([corner, corner + 0.3, torch.full((2, 4, 1), 0.09)], -1)
        inputs = dict(input_ids=torch.tensor([[101, 2003, 2045, 102], [101, 2054, 102, 0]]),
                      attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
                      visual_feats=torch.randn(2, 4, 8, generator=generator), visual_pos=boxes,
                      visual_attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]))
        with torch.no_grad():
            torch.save({{"inputs": inputs, "logits": model(**inputs).logits, "processed": dict(processed)}},
                       {str(tmp_path / "ref.pt")!r})
        """,
        env=env,
        cwd=tmp_path,
    )
    files = set(local_hub.list_files(repo))
    assert {"model.safetensors", "config.json", "modeling_interbert.py", "configuration_interbert.py",
            "processing_interbert.py", "processor_config.json"} <= files
    auto_map = json.loads(local_hub.read_file(repo, "config.json"))["auto_map"]
    assert auto_map["AutoModelForVisualQuestionAnswering"] == "modeling_interbert.InterBertForQuestionAnswering"
    assert auto_map["AutoModelForMultipleChoice"] == "modeling_interbert.InterBertForMultipleChoice"
    assert auto_map["AutoModelForSequenceClassification"] == "modeling_interbert.InterBertForSequenceClassification"
    assert auto_map["AutoModelForPreTraining"] == "modeling_interbert.InterBertForPreTraining"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env.pop("PYTHONPATH", None)
    run_python(
        NO_HF_VL
        + f"""        import torch
        from transformers import AutoModel, AutoModelForPreTraining, AutoModelForVisualQuestionAnswering, AutoProcessor
        model = AutoModelForVisualQuestionAnswering.from_pretrained({repo!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert type(model).__name__ == "InterBertForQuestionAnswering"
        ref = torch.load({str(tmp_path / "ref.pt")!r})
        with torch.no_grad():
            torch.testing.assert_close(model(**ref["inputs"]).logits, ref["logits"], atol=1e-5, rtol=0)
        assert type(AutoModel.from_pretrained({repo!r}, trust_remote_code=True)).__name__ == "InterBertModel"
        pretraining = AutoModelForPreTraining.from_pretrained({repo!r}, trust_remote_code=True)
        assert pretraining.msm_head.decoder.weight is pretraining.interbert.embeddings.word_embeddings.weight
        processor = AutoProcessor.from_pretrained({repo!r}, trust_remote_code=True)
        assert type(processor).__name__ == "InterBertProcessor", type(processor)
        processed = processor(text="is there a circle?", visual_feats=torch.ones(3, 8),
                              visual_pos=torch.tensor([[0.1, 0.2, 0.5, 0.6]] * 3))
        for key, value in ref["processed"].items():
            assert torch.equal(processed[key], value), key
        print("REMOTE CODE OK", model.config.id2label)
        """,
        env=env,
        cwd=elsewhere,
    )


def test_model_card_template_fills_every_placeholder(tmp_path):
    from hf_vl import InterBertConfig

    model = InterBertForQuestionAnswering(InterBertConfig(**TINY))
    card = render_model_card(
        model, model_name="interbert-easy-vqa", repo_id="user/interbert-easy-vqa", tokenizer_id="bert-base-uncased",
        intended_uses="Testing.", max_text_len=20, visual_feat_dim=8, visual_pos_dim=5,
        global_region="yes (`prepend_global_region=True`)", training_data="none", evaluation_results="none",
        provenance="random initialisation",
    )
    assert card.startswith("---\n") and "InterBertForQuestionAnswering" in card and "interbert-easy-vqa" in card
    assert not re.search(r"\$\{?[A-Za-z_]", card)
    try:
        save_for_hub(model, tmp_path / "saved", model_card=card)
    finally:  # save_for_hub registers the classes for their Auto classes: keep other tests' configs free of auto_map
        InterBertConfig._auto_class = None
        InterBertForQuestionAnswering._auto_class = None
    assert (tmp_path / "saved" / "README.md").read_text(encoding="utf-8") == card
    assert (tmp_path / "saved" / "modeling_interbert.py").is_file()
