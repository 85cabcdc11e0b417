"""examples/run_vlmo_stagewise.py: a tiny run of the three stages (image -> text -> vision-language), each from the
previous stage's folder. Stage 2 (text-only MLM) leaves the self-attention, the V-FFN experts and the image embeddings
bit-identical and trains the L-FFN experts and text embeddings; the results file has every stage's metrics; the final
folder loads with AutoModelForPreTraining."""

import importlib.util
import json
import os
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForPreTraining

import hf_vl
from test_run_vqa import ROOT, _run

SCRIPT = ROOT / "examples" / "run_vlmo_stagewise.py"
TINY = ["--image_size", "32", "--patch_size", "8", "--hidden_size", "32", "--num_hidden_layers", "2",
        "--num_attention_heads", "4", "--vl_ffn_start_layer", "1", "--image_steps", "6", "--text_steps", "6",
        "--vision_language_steps", "4", "--max_train_samples", "64", "--max_eval_samples", "32",
        "--per_device_train_batch_size", "8", "--logging_steps", "2", "--learning_rate", "2e-3", "--warmup_steps", "0",
        "--seed", "0"]  # fmt: skip

FROZEN_IN_TEXT_STAGE = (".attention.", ".image_expert.", "image_embeddings.", "layernorm_before", "relative_position",
                        "vl_expert", "itc_")
TRAINED_IN_TEXT_STAGE = (".text_expert.", "text_embeddings.")


@pytest.fixture(scope="module")
def stagewise_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("vlmo-stagewise")
    log = _run([sys.executable, str(SCRIPT), *TINY, "--output_dir", str(output_dir)], cwd=ROOT)
    return output_dir, json.loads((output_dir / "all_results.json").read_text()), log


def _backbone(folder):
    return {name: tensor for name, tensor in load_file(os.path.join(folder, "model.safetensors")).items()
            if name.startswith("vlmo.")}


def test_text_stage_trains_only_the_language_expert(stagewise_run):
    output_dir = stagewise_run[0]
    before, after = _backbone(output_dir / "image"), _backbone(output_dir / "text")
    assert before.keys() == after.keys()
    frozen = [name for name in before if any(part in name for part in FROZEN_IN_TEXT_STAGE)]
    trained = [name for name in before if any(part in name for part in TRAINED_IN_TEXT_STAGE)]
    assert any(".attention.qkv" in name for name in frozen) and any(".image_expert.fc1" in name for name in frozen)
    assert any("image_embeddings.patch_embeddings" in name for name in frozen)
    for name in frozen:
        assert torch.equal(before[name], after[name]), f"{name} changed in the text stage"
    changed = [name for name in trained if not torch.equal(before[name], after[name])]
    assert any(".text_expert.fc1.weight" in name for name in changed)
    assert "vlmo.text_embeddings.word_embeddings.weight" in changed
    # everything else in the backbone is frozen too (set_pretraining_stage("text")): only L-FFN + text embeddings move
    assert {name for name in before if not torch.equal(before[name], after[name])} <= set(trained)


def test_image_stage_from_a_folder_trains_the_vision_side_only(stagewise_run, tmp_path):
    """`--stages image --model_name_or_path`: the image stage alone, from a saved model; the language side stays."""
    output_dir = stagewise_run[0]
    start = tmp_path / "start"
    torch.manual_seed(0)
    hf_vl.VlmoForPreTraining(hf_vl.VlmoConfig.from_pretrained(output_dir / "image")).save_pretrained(start)
    hf_vl.VlmoProcessor.from_pretrained(output_dir / "image").save_pretrained(start)
    _run([sys.executable, str(SCRIPT), *TINY, "--stages", "image", "--model_name_or_path", str(start),
          "--output_dir", str(tmp_path / "run")], cwd=ROOT)  # fmt: skip
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert results["stages"] == ["image"] and "text_train_loss" not in results
    before, after = _backbone(start), _backbone(tmp_path / "run" / "image")
    frozen = [name for name in before if any(part in name for part in (".text_expert.", "text_embeddings.",
                                                                        ".vl_expert.", "itc_text_proj", "pooler."))]
    assert frozen and all(torch.equal(before[name], after[name]) for name in frozen)
    for name in ("vlmo.layers.0.image_expert.fc1.weight", "vlmo.layers.0.attention.qkv.weight",
                 "vlmo.image_embeddings.patch_embeddings.weight"):
        assert not torch.equal(before[name], after[name]), name


def test_results_have_per_stage_metrics_and_the_final_folder_loads(stagewise_run):
    output_dir, saved, log = stagewise_run
    assert saved["stages"] == ["image", "text", "vision_language"]
    assert 0.0 <= saved["image_eval_accuracy"] <= 1.0 and saved["image_eval_num_images"] == 32
    assert saved["image_eval_chance_accuracy"] == pytest.approx(1 / 24)
    assert 0.0 <= saved["text_eval_mlm_accuracy"] <= 1.0 and saved["text_eval_masked_tokens"] > 0
    for key in ("itc_loss", "itm_loss", "mlm_loss", "mlm_accuracy", "itm_accuracy", "i2t_r1"):
        assert f"vision_language_eval_{key}" in saved
    for stage in ("image", "text", "vision_language"):
        assert saved[f"{stage}_train_loss"] > 0 and saved[f"{stage}_final_train_loss"] > 0
    assert saved["image_train_steps"] == 6 and saved["vision_language_train_steps"] == 4
    model = AutoModelForPreTraining.from_pretrained(output_dir / "vision_language")
    assert type(model) is hf_vl.VlmoForPreTraining
    text = _backbone(output_dir / "text")
    # the final folder went through the text stage: its L-FFN came from there and was trained further
    assert not torch.equal(model.state_dict()["vlmo.layers.0.text_expert.fc1.weight"],
                           text["vlmo.layers.0.text_expert.fc1.weight"])


def test_stages_are_checked():
    spec = importlib.util.spec_from_file_location("run_vlmo_stagewise", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(ValueError, match="--stages"):
        module.StagewiseArguments(stages="image,audio").stage_list()
    assert module.StagewiseArguments(stages="text, vision_language").stage_list() == ["text", "vision_language"]
