"""METER end to end: Hub publishing with code (local Hub server, fresh process without hf_vl), PEFT LoRA with the
Trainer, METER's parameter groups and fused optimizer, building from a real pretrained text encoder (all-MiniLM-L6-v2)."""

import copy
import json
import os

import numpy as np
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModel, AutoTokenizer, Trainer, TrainingArguments

from hf_vl import MeterConfig, MeterForQuestionAnswering, MeterImageProcessor, MeterProcessor
from hf_vl.testing import hub_env, run_python
from hf_vl.training import create_vl_optimizer, local_pretrained_path, vl_parameter_groups

TINY = dict(
    text_config=dict(model_type="bert", vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                     intermediate_size=37, max_position_embeddings=64),
    vision_config=dict(model_type="clip_vision_model", hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                       intermediate_size=37, image_size=32, patch_size=8),
    hidden_size=32, num_attention_heads=4, intermediate_size=37, num_fusion_layers=1,
    id2label={0: "yes", 1: "no", 2: "circle"}, label2id={"yes": 0, "no": 1, "circle": 2},
)

# A fresh interpreter in which `import hf_vl` fails: only the checkpoint's own code can build the model.
NO_HF_VL = "        import sys; sys.modules['hf_vl'] = None\n"


def test_push_to_hub_with_code_loads_with_trust_remote_code_in_fresh_process(local_hub, tmp_path):
    repo = local_hub.new_repo_id("meter-vqa")
    env = hub_env(local_hub, hf_home=tmp_path / "hf_home")
    minilm = local_pretrained_path("minilm")
    run_python(
        f"""
        import json, torch, numpy as np
        from transformers import AutoTokenizer
        from hf_vl import MeterConfig, MeterForQuestionAnswering, MeterImageProcessor, MeterProcessor
        from hf_vl.hub import push_to_hub_with_code
        torch.manual_seed(0)
        model = MeterForQuestionAnswering(MeterConfig(**json.loads({json.dumps(json.dumps(TINY))}))).eval()
        processor = MeterProcessor(MeterImageProcessor(resolution=32), AutoTokenizer.from_pretrained({minilm!r}))
        push_to_hub_with_code(model, {repo!r}, processor=processor, commit_message="METER with code")
        image = (np.arange(40 * 48 * 3) % 255).reshape(40, 48, 3).astype("uint8")
        inputs = processor(images=image, text="what shape is it?", return_tensors="pt")
        torch.save({{"inputs": dict(inputs), "logits": model(**inputs).logits}}, {str(tmp_path / "ref.pt")!r})
        """,
        env=env,
        cwd=tmp_path,
    )
    files = set(local_hub.list_files(repo))
    assert {"model.safetensors", "config.json", "modeling_meter.py", "configuration_meter.py", "processing_meter.py",
            "image_processing_meter.py", "processor_config.json"} <= files
    auto_map = json.loads(local_hub.read_file(repo, "config.json"))["auto_map"]
    assert auto_map["AutoModelForVisualQuestionAnswering"] == "modeling_meter.MeterForQuestionAnswering"
    assert auto_map["AutoModel"] == "modeling_meter.MeterModel"
    assert auto_map["AutoModelForPreTraining"] == "modeling_meter.MeterForPreTraining"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env.pop("PYTHONPATH", None)
    run_python(
        NO_HF_VL
        + f"""        import numpy as np, torch
        from transformers import AutoModel, AutoModelForVisualQuestionAnswering, AutoProcessor
        model = AutoModelForVisualQuestionAnswering.from_pretrained({repo!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert type(model).__name__ == "MeterForQuestionAnswering"
        processor = AutoProcessor.from_pretrained({repo!r}, trust_remote_code=True)
        image = (np.arange(40 * 48 * 3) % 255).reshape(40, 48, 3).astype("uint8")
        inputs = processor(images=image, text="what shape is it?", return_tensors="pt")
        ref = torch.load({str(tmp_path / "ref.pt")!r})
        for key, value in ref["inputs"].items():
            assert torch.equal(inputs[key], value), key
        with torch.no_grad():
            torch.testing.assert_close(model(**inputs).logits, ref["logits"], atol=1e-5, rtol=0)
        base = AutoModel.from_pretrained({repo!r}, trust_remote_code=True)
        assert type(base).__name__ == "MeterModel"
        print("REMOTE CODE OK", model.config.id2label)
        """,
        env=env,
        cwd=elsewhere,
    )


def _tiny_vqa_dataset(num_rows=12):
    rng = np.random.default_rng(0)
    return Dataset.from_dict(
        {
            "input_ids": rng.integers(1000, 2000, size=(num_rows, 6)).tolist(),
            "pixel_values": rng.normal(size=(num_rows, 3, 32, 32)).astype("float32").tolist(),
            "labels": np.eye(3, dtype="float32")[rng.integers(0, 3, size=num_rows)].tolist(),
        }
    ).with_format("torch")


def test_lora_on_attention_projections_trains_with_trainer_and_reloads(tmp_path):
    torch.manual_seed(0)
    config = MeterConfig(**TINY)
    model = MeterForQuestionAnswering(config)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "key", "value"], modules_to_save=["classifier"])
    peft_model = get_peft_model(model, lora)
    lora_names = [n for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" in n]
    # the adapters sit on the fusion layers' self- and cross-attention projections (and the text tower's)
    assert any("cross_modal_text_layers.0.crossattention.self.query.lora_A" in n for n in lora_names)
    assert any("cross_modal_image_layers.0.attention.self.value.lora_B" in n for n in lora_names)
    frozen_before = {n: p.detach().clone() for n, p in peft_model.named_parameters() if not p.requires_grad}
    lora_before = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_B" in n}

    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4,
                             learning_rate=1e-2, report_to="none", save_strategy="no", use_cpu=True,
                             remove_unused_columns=False, disable_tqdm=True)
    Trainer(model=peft_model, args=args, train_dataset=_tiny_vqa_dataset()).train()

    for name, before in frozen_before.items():
        assert torch.equal(dict(peft_model.named_parameters())[name], before), f"{name} changed"
    assert any(not torch.equal(dict(peft_model.named_parameters())[n], b) for n, b in lora_before.items())

    peft_model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    batch = _tiny_vqa_dataset(2)[:2]
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"]).logits
    torch.manual_seed(0)
    reloaded = PeftModel.from_pretrained(MeterForQuestionAnswering(config), tmp_path / "adapter").eval()
    with torch.no_grad():
        actual = reloaded(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"]).logits
    torch.testing.assert_close(actual, expected)


def test_parameter_groups_give_new_parameters_a_larger_learning_rate():
    model = MeterForQuestionAnswering(MeterConfig(**TINY))
    groups = vl_parameter_groups(model, learning_rate=1e-5, new_parameters_lr_multiplier=5.0, weight_decay=0.01)
    by_param = {id(p): g for g in groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert by_param[id(names["meter.text_model.encoder.layer.0.attention.self.query.weight"])]["lr"] == 1e-5
    assert by_param[id(names["meter.vision_model.encoder.layers.0.mlp.fc1.weight"])]["lr"] == 1e-5
    assert by_param[id(names["meter.cross_modal_text_layers.0.attention.self.query.weight"])]["lr"] == 5e-5
    assert by_param[id(names["classifier.3.weight"])]["lr"] == 5e-5
    assert by_param[id(names["classifier.3.bias"])]["weight_decay"] == 0.0
    assert by_param[id(names["classifier.3.weight"])]["weight_decay"] == 0.01
    assert sum(len(g["params"]) for g in groups) == len(names)


def test_vl_optimizer_uses_the_fused_adamw_kernel_and_matches_the_per_tensor_update():
    model = MeterForQuestionAnswering(MeterConfig(**TINY))
    optimizer = create_vl_optimizer(model, learning_rate=1e-3)
    assert optimizer.defaults["fused"] and all(group["fused"] for group in optimizer.param_groups)
    assert not create_vl_optimizer(model, learning_rate=1e-3, fused=False).defaults["fused"]
    # the same updates as torch's per-tensor loop (a plain network: no parameter with a vanishing gradient, such as
    # an attention key bias, whose Adam step is rounding noise)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.GELU(), torch.nn.Linear(16, 3))
    reference, initial = copy.deepcopy(net), dict(copy.deepcopy(net).named_parameters())
    optimizers = [create_vl_optimizer(module, 1e-2, pretrained_names={"0.weight", "0.bias"}, fused=fused)
                  for module, fused in ((net, None), (reference, False))]  # fmt: skip
    assert optimizers[0].defaults["fused"] and [g["lr"] for g in optimizers[0].param_groups] == [5e-2, 5e-2, 1e-2, 1e-2]
    inputs, targets = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for _ in range(5):
        for module, opt in zip((net, reference), optimizers):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(module(inputs), targets).backward()
            opt.step()
    for (name, actual), expected in zip(net.named_parameters(), reference.parameters()):
        assert not torch.equal(actual, initial[name]), name  # trained
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6, msg=name)


def test_from_text_vision_pretrained_with_real_minilm():
    path = local_pretrained_path("all-MiniLM-L6-v2")
    vision = dict(TINY["vision_config"])
    model = MeterForQuestionAnswering.from_text_vision_pretrained(
        path, vision, hidden_size=64, num_attention_heads=4, intermediate_size=128, num_fusion_layers=1, num_labels=4
    ).eval()
    reference = AutoModel.from_pretrained(path)
    for name, param in reference.named_parameters():
        if not name.startswith("pooler."):
            assert torch.equal(model.meter.text_model.get_parameter(name), param), name
    assert model.config.text_config.hidden_size == 384
    tokenizer = AutoTokenizer.from_pretrained(path)
    processor = MeterProcessor(MeterImageProcessor(resolution=32), tokenizer)
    inputs = processor(images=np.zeros((32, 32, 3), dtype="uint8"), text="is there a circle?", return_tensors="pt")
    with torch.no_grad():
        assert model(**inputs).logits.shape == (1, 4)
    assert model.meter.pretrained_parameter_names() >= {"text_model.embeddings.word_embeddings.weight"}
