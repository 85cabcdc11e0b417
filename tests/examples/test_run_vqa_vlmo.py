"""examples/run_vqa.py --model_type vlmo: a short Trainer run builds a VLMo from scratch, saves a Hub-ready folder
(VLMo's code, full auto_map, processor, filled VLMo model card) that answers through `pipeline()` and evaluates again
from the saved folder to the same score."""

import json
import os
import re
import sys

import pytest

from test_run_vqa import ROOT, SCRIPT, _run

VLMO_ARGS = [
    "--model_type", "vlmo", "--image_size", "32", "--patch_size", "8", "--hidden_size", "32",
    "--num_hidden_layers", "2", "--num_fusion_layers", "1", "--num_attention_heads", "4", "--fusion_dropout", "0",
    "--max_train_samples", "64", "--max_eval_samples", "32", "--max_steps", "3",
    "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16", "--learning_rate", "1e-3",
    "--report_to", "none", "--save_strategy", "no", "--use_cpu", "true", "--dataloader_num_workers", "0",
    "--seed", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("run_vqa_vlmo") / "vlmo-easy-vqa"
    log = _run([sys.executable, str(SCRIPT), "--output_dir", str(output_dir), *VLMO_ARGS], cwd=ROOT)
    return output_dir, log


def test_vlmo_run_saves_a_hub_ready_vlmo_folder(trained):
    output_dir, log = trained
    files = set(os.listdir(output_dir))
    assert {"model.safetensors", "config.json", "processor_config.json", "README.md", "modeling_vlmo.py",
            "configuration_vlmo.py", "processing_vlmo.py", "image_processing_vlmo.py"} <= files
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "vlmo" and config["num_hidden_layers"] == 2 and config["vl_ffn_start_layer"] == 1
    assert config["auto_map"]["AutoModelForVisualQuestionAnswering"] == "modeling_vlmo.VlmoForQuestionAnswering"
    assert config["initializer_range"] == pytest.approx(32**-0.5)
    card = (output_dir / "README.md").read_text()
    assert "$" not in card.split("```bibtex")[0] and "VlmoForQuestionAnswering" in card
    assert "mean = std = 0.5" in card and "MeterForQuestionAnswering" not in card
    assert "Training VlmoForQuestionAnswering" in log


def test_vlmo_folder_answers_through_the_pipeline_and_re_evaluates(trained, tmp_path):
    import hf_vl  # noqa: F401  (registers the pipeline task)
    from PIL import Image
    from transformers import pipeline

    output_dir, _ = trained
    answers = pipeline("vl-question-answering", model=str(output_dir))(
        image=Image.new("RGB", (64, 64), "red"), question="what color is the shape?", top_k=2
    )
    assert len(answers) == 2 and {"score", "answer"} <= set(answers[0])
    log = _run([sys.executable, str(SCRIPT), "--model_name_or_path", str(output_dir), "--output_dir",
                str(tmp_path / "eval"), "--do_eval", *VLMO_ARGS[VLMO_ARGS.index("--max_eval_samples"):]], cwd=ROOT)
    first = json.loads((output_dir / "eval_results.json").read_text())["eval_vqa_score"]
    again = json.loads((tmp_path / "eval" / "eval_results.json").read_text())["eval_vqa_score"]
    assert abs(first - again) < 1e-6, log[-2000:]


def test_vlmo_text_init_starts_from_the_minilm_layers(tmp_path):
    """`--vlmo_text_init`: the Multiway Transformer takes MiniLM's first layers (width 384; attention -> shared
    attention, FFN -> L-FFN), the new weights start with std 384 ** -0.5, and the run trains and saves."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel

    from hf_vl.training import local_pretrained_path

    output_dir = tmp_path / "vlmo-minilm"
    args = list(VLMO_ARGS)
    for flag in ("--hidden_size", "--num_hidden_layers", "--num_attention_heads"):  # MiniLM sets the sizes
        index = args.index(flag)
        del args[index : index + 2]
    _run([sys.executable, str(SCRIPT), "--output_dir", str(output_dir), *args, "--vlmo_text_init", "--text_num_layers",
          "2", "--max_steps", "1", "--learning_rate", "1e-12"], cwd=ROOT)  # fmt: skip
    config = json.loads((output_dir / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vl_ffn_start_layer"]) == (384, 2, 1)
    assert config["initializer_range"] == pytest.approx(384**-0.5)
    weights = load_file(output_dir / "model.safetensors")
    minilm = AutoModel.from_pretrained(local_pretrained_path("minilm"))
    dense = minilm.encoder.layer[1].intermediate.dense.weight
    copied = [tensor for name, tensor in weights.items() if name.endswith("weight") and tensor.shape == dense.shape
              and "layers.1." in name]  # fmt: skip
    assert copied and any(torch.allclose(tensor, dense, atol=1e-6) for tensor in copied)  # lr 1e-12: still MiniLM's


def test_vlmo_image_stage_trains_the_vision_side_before_vqa(tmp_path):
    """`--vlmo_image_stage_epochs`: VLMo's image-only stage (VlmoForImageClassification on the training images' classes,
    here `--vlmo_image_stage_label shape`, sharing the backbone) runs before VQA: it changes the V-FFN experts and
    leaves the L-FFN (frozen by `set_pretraining_stage("image")`) as MiniLM's. With `--vlmo_absolute_positions` and
    `--vlmo_layer_scale_init_value 0` (VLMo-Base-Plus's layout) the text positions are MiniLM's and there is no layer
    scale."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel

    from hf_vl.training import local_pretrained_path

    output_dir = tmp_path / "vlmo-image-stage"
    args = list(VLMO_ARGS)
    for flag in ("--hidden_size", "--num_hidden_layers", "--num_attention_heads"):
        index = args.index(flag)
        del args[index : index + 2]
    log = _run([sys.executable, str(SCRIPT), "--output_dir", str(output_dir), *args, "--vlmo_text_init",
                "--text_num_layers", "2", "--max_steps", "1", "--learning_rate", "1e-12", "--vlmo_image_stage_epochs",
                "1", "--vlmo_image_stage_learning_rate", "1e-2", "--vlmo_image_stage_label", "shape",
                "--vlmo_image_stage_batch_size", "16",
                "--vlmo_absolute_positions", "--vlmo_layer_scale_init_value", "0"], cwd=ROOT)  # fmt: skip
    assert "VLMo image stage: 1 epochs on 64 training images (3 shape classes), 4 steps of batch 16" in log
    config = json.loads((output_dir / "config.json").read_text())
    assert config["use_relative_position_bias"] is False and config["use_absolute_position_embeddings"] is True
    assert config["layer_scale_init_value"] is None
    card = (output_dir / "README.md").read_text()
    assert "from_text_pretrained" in card and "image-only stage (1 epochs" in card
    weights = load_file(output_dir / "model.safetensors")
    minilm = AutoModel.from_pretrained(local_pretrained_path("minilm"))
    dense = minilm.encoder.layer[0].intermediate.dense.weight
    torch.testing.assert_close(weights["vlmo.layers.0.text_expert.fc1.weight"], dense)  # frozen in the image stage
    assert not torch.allclose(weights["vlmo.layers.0.image_expert.fc1.weight"], dense)  # trained on images
    rows = weights["vlmo.text_embeddings.position_embeddings.weight"].shape[0]
    torch.testing.assert_close(weights["vlmo.text_embeddings.position_embeddings.weight"],
                               minilm.embeddings.position_embeddings.weight[:rows])  # lr 1e-12 in VQA
    assert not any(name.endswith("gamma_1") for name in weights)
    # VQA's LR split: MiniLM's copies and everything the image stage trained (V-FFN included) are "pretrained"
    import hf_vl

    minilm.encoder.layer, minilm.config.num_hidden_layers = minilm.encoder.layer[:2], 2
    vqa = hf_vl.VlmoForQuestionAnswering.from_text_pretrained(
        minilm, vl_ffn_start_layer=1, image_size=32, patch_size=8, num_labels=13, layer_scale_init_value=None,
        use_relative_position_bias=False, use_absolute_position_embeddings=True,
    )  # fmt: skip
    stage = hf_vl.VlmoForImageClassification(vqa.config)
    stage.vlmo = vqa.vlmo
    trained = {name.removeprefix("vlmo.") for name in stage.set_pretraining_stage("image") if name.startswith("vlmo.")}
    copied = vqa.vlmo.pretrained_parameter_names()
    assert "layers.0.image_expert.fc1.weight" in trained - copied
    groups = dict(re.findall(r"(pretrained(?:_no_decay)?) (\d+) tensors at lr", log))
    assert sum(map(int, groups.values())) == len(copied | trained), log
