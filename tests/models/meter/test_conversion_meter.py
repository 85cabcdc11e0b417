"""Parity tests of `conversion/convert_meter_original_to_hf.py` against checkpoints and outputs written by the original
METER code (`tests/fixtures/meter_clip`, `tests/fixtures/meter_swin`; see the README.md in each).

`conversion/` is a folder of scripts, not a package: the converter is imported from its file path.
"""

import argparse
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, RobertaTokenizer

from hf_vl.models.meter.image_processing_meter import MeterImageProcessor


REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPT = REPO_ROOT / "conversion" / "convert_meter_original_to_hf.py"
FIXTURES = REPO_ROOT / "tests" / "fixtures"
ATOL = 1e-4

RECORDED_OUTPUTS = {
    "infer.cls_feats", "infer.text_feats", "infer.image_feats",
    "intermediate.text_tower", "intermediate.image_tower",
    "mlm_logits", "itm_logits", "vqa_logits", "snli_logits", "irtr_score", "nlvr2_logits",
    "nlvr2.infer1.cls_feats", "nlvr2.infer2.cls_feats", "nlvr2.infer2.text_feats", "nlvr2.infer2.image_feats",
}  # fmt: skip
ALL_TASKS = ["pretraining", "vqa", "nlvr2", "snli_ve", "retrieval"]


def _import_converter():
    spec = importlib.util.spec_from_file_location("convert_meter_original_to_hf", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


convert = _import_converter()


@pytest.fixture(scope="module", params=["meter_clip", "meter_swin"])
def fixture_dir(request) -> Path:
    return FIXTURES / request.param


@pytest.fixture(scope="module")
def original_state_dict(fixture_dir):
    return convert.load_original_checkpoint(fixture_dir / "checkpoint.ckpt")


@pytest.fixture(scope="module")
def original_config(fixture_dir):
    return convert.read_original_config(fixture_dir / "original_config.json")


@pytest.fixture(scope="module")
def converted(original_state_dict, original_config):
    return convert.convert_state_dict(original_state_dict, original_config=original_config)


@pytest.fixture(scope="module")
def models(converted):
    return {task: convert.load_converted_model(task, config, sd)[0] for task, (config, sd) in converted.items()}


@pytest.fixture(scope="module")
def reference(fixture_dir):
    return load_file(fixture_dir / "inputs.safetensors"), load_file(fixture_dir / "outputs.safetensors")


@pytest.fixture(scope="module")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A RoBERTa byte-level BPE tokenizer whose ids (< 32) fit the fixtures' 120-word vocabulary."""
    tokens = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "Ġ"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokenizer = RobertaTokenizer(vocab={token: i for i, token in enumerate(tokens)}, merges=[])
    folder = tmp_path_factory.mktemp("tiny_roberta_tokenizer")
    tokenizer.save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------------------------------------------------
# What was read from the tensors
# ----------------------------------------------------------------------------------------------------------------------


def test_configs_are_read_from_the_checkpoint(fixture_dir, converted):
    assert list(converted) == ALL_TASKS
    config = converted["vqa"].config
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size) == (32, 4, 64)
    assert (config.num_fusion_layers, config.modality_type_vocab_size, config.fusion_type) == (2, 3, "co_attention")
    assert (config.hidden_dropout_prob, config.layer_norm_eps, config.classifier_layer_norm_eps) == (0.0, 1e-12, 1e-5)
    text = config.text_config
    assert (text.model_type, text.vocab_size, text.hidden_size, text.num_hidden_layers) == ("roberta", 120, 32, 2)
    assert (text.num_attention_heads, text.intermediate_size, text.max_position_embeddings) == (4, 64, 16)
    assert (text.type_vocab_size, text.pad_token_id, text.layer_norm_eps) == (1, 1, 1e-12)
    vision = config.vision_config
    if fixture_dir.name == "meter_clip":
        assert vision.model_type == "clip_vision_model" and config.image_pooling == "cls"
        # METER keeps vision_layers - 1 = 2 CLIP blocks; heads = width // 64
        assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (128, 2, 2)
        assert (vision.patch_size, vision.image_size, vision.intermediate_size, vision.hidden_act) == (
            16, 48, 512, "quick_gelu",
        )  # fmt: skip
    else:
        assert vision.model_type == "swin" and config.image_pooling == "mean"
        assert (vision.embed_dim, vision.depths, vision.num_heads) == (16, [2, 2, 2], [1, 2, 4])
        assert (vision.patch_size, vision.image_size, vision.window_size, vision.hidden_size) == (4, 64, 2, 64)
        assert vision.use_absolute_embeddings is False and vision.mlp_ratio == 4.0
    assert converted["vqa"].config.num_labels == 7
    assert converted["snli_ve"].config.num_labels == 3
    assert converted["nlvr2"].config.id2label == {0: "False", 1: "True"}
    assert converted["nlvr2"].config.architectures == ["MeterForImagesAndTextClassification"]


def test_every_original_key_is_used_once(fixture_dir, original_state_dict, converted):
    base, heads, dropped = convert.rename_state_dict(original_state_dict)
    expected_dropped = {
        "text_transformer.embeddings.position_ids",
        "text_transformer.pooler.dense.weight",
        "text_transformer.pooler.dense.bias",
    }
    if fixture_dir.name == "meter_clip":
        expected_dropped |= {"vit_model.positional_embedding", "vit_model.ln_final.weight", "vit_model.ln_final.bias"}
    else:
        expected_dropped |= {k for k in original_state_dict if k.endswith(("attn_mask", "relative_position_index"))}
    assert set(dropped) == expected_dropped
    fused = [k for k in original_state_dict if k.endswith(("in_proj_weight", "in_proj_bias", "qkv.weight", "qkv.bias"))]
    written = len(base) + sum(len(h) for h in heads.values())
    assert written == len(original_state_dict) - len(dropped) + 2 * len(fused)
    assert len(converted["retrieval"].state_dict) == len(base) + 2


def test_fused_projections_are_split_in_q_k_v_order(fixture_dir, original_state_dict, converted):
    state_dict = converted["vqa"].state_dict
    if fixture_dir.name == "meter_clip":
        fused = original_state_dict["vit_model.visual.transformer.resblocks.1.attn.in_proj_weight"]
        prefix = "meter.vision_model.encoder.layers.1.self_attn."
    else:
        fused = original_state_dict["vit_model.layers.2.blocks.1.attn.qkv.weight"]
        prefix = "meter.vision_model.encoder.layers.2.blocks.1.attention."
    split = torch.cat([state_dict[f"{prefix}{name}_proj.weight"] for name in "qkv"])
    assert torch.equal(split, fused)


def test_new_parameters_are_reported(original_state_dict, original_config, converted):
    for task, (config, state_dict) in converted.items():
        _, new = convert.load_converted_model(task, config, state_dict)
        mim = ["mim_discrete_score.bias", "mim_discrete_score.weight", "mim_score.bias", "mim_score.weight"]
        assert new == (mim if task == "pretraining" else [])  # the original has no MIM heads
    # an IRTR fine-tuned checkpoint has `itm_score` (and `rank_output`) but no `mlm_score`: the MLM head is new
    without_mlm = {k: v for k, v in original_state_dict.items() if not k.startswith("mlm_score.")}
    config, state_dict = convert.convert_state_dict(without_mlm, original_config=original_config)["pretraining"]
    _, new = convert.load_converted_model("pretraining", config, state_dict)
    assert {k for k in new if not k.startswith(("mim_score.", "mim_discrete_score."))} == {
        k for k in original_state_dict if k.startswith("mlm_score.")
    }
    # a head present only in part is an error
    partial = {**state_dict, "mlm_score.decoder.weight": original_state_dict["mlm_score.decoder.weight"]}
    with pytest.raises(ValueError, match="mlm_score.bias"):
        convert.load_converted_model("pretraining", config, partial)


# ----------------------------------------------------------------------------------------------------------------------
# Parity with the original code
# ----------------------------------------------------------------------------------------------------------------------


def test_every_recorded_output_matches(models, reference):
    inputs, outputs = reference
    assert set(outputs) == RECORDED_OUTPUTS
    differences = convert.compare_with_reference(models, inputs, outputs)
    assert set(differences) == RECORDED_OUTPUTS
    skipped = [name for name, diff in differences.items() if diff is None]
    assert not skipped, f"not compared: {skipped}"
    too_large = {name: diff for name, diff in differences.items() if diff > ATOL}
    assert not too_large, f"max abs differences above {ATOL}: {too_large}"


def test_saved_folders_reload_with_from_pretrained(models, reference, tmp_path):
    inputs, outputs = reference
    folders = convert.save_converted(models, tmp_path)
    reloaded = {}
    for task, folder in folders.items():
        assert folder == tmp_path / task and (folder / "model.safetensors").is_file()
        reloaded[task] = convert.TASK_CLASSES[task].from_pretrained(folder).eval()
        original_weights, reloaded_weights = models[task].state_dict(), reloaded[task].state_dict()
        assert set(original_weights) == set(reloaded_weights)
        for name, value in original_weights.items():  # includes the initialised mim_score
            assert torch.equal(value, reloaded_weights[name]), name
    assert reloaded["nlvr2"].config.modality_type_vocab_size == 3
    before = convert.predict_reference_outputs(models, inputs)
    after = convert.predict_reference_outputs(reloaded, inputs)
    assert before.keys() == after.keys() and RECORDED_OUTPUTS <= before.keys()
    for name in before:
        for value_before, value_after in zip(before[name], after[name], strict=True):
            # same weights; only the memory layout of the loaded tensors may change the last float bit
            torch.testing.assert_close(value_after, value_before, rtol=0, atol=1e-6, msg=name)
    assert all(diff <= ATOL for diff in convert.compare_with_reference(reloaded, inputs, outputs).values())


# ----------------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------------


def test_unknown_original_key_raises(original_state_dict, original_config):
    state_dict = {**original_state_dict, "vit_model.head.weight": torch.zeros(10, 64)}  # e.g. a timm classifier
    with pytest.raises(ValueError, match=re.escape("vit_model.head.weight")):
        convert.convert_state_dict(state_dict, original_config=original_config)


def test_missing_or_misshaped_tensor_raises(converted):
    config, state_dict = converted["vqa"]
    incomplete = {k: v for k, v in state_dict.items() if k != "meter.token_type_embeddings.weight"}
    with pytest.raises(ValueError, match="meter.token_type_embeddings.weight"):
        convert.load_converted_model("vqa", config, incomplete)
    misshaped = {**state_dict, "classifier.3.weight": torch.zeros(5, 64)}
    with pytest.raises(ValueError, match="classifier.3.weight"):
        convert.load_converted_model("vqa", config, misshaped)


def test_requested_task_must_exist(original_state_dict, original_config):
    without_vqa = {k: v for k, v in original_state_dict.items() if not k.startswith("vqa_classifier.")}
    assert convert.detect_tasks(without_vqa) == ["pretraining", "nlvr2", "snli_ve", "retrieval"]
    with pytest.raises(ValueError, match="vqa"):
        convert.convert_state_dict(without_vqa, original_config=original_config, tasks=["vqa"])
    only = convert.convert_state_dict(original_state_dict, original_config=original_config, tasks=["retrieval"])
    assert list(only) == ["retrieval"]


def test_answer_vocabulary_becomes_id2label(original_state_dict, original_config, tmp_path):
    answers = ["yes", "no", "2", "red", "circle", "blue", "square"]
    for content in (answers, {a: i for i, a in enumerate(answers)}, {str(i): a for i, a in enumerate(answers)}):
        (tmp_path / "answers.json").write_text(json.dumps(content))
        id2label = convert.read_answer_vocab(tmp_path / "answers.json")
        config = convert.convert_state_dict(
            original_state_dict, original_config=original_config, tasks=["vqa"], id2label=id2label
        )["vqa"].config
        assert config.id2label == dict(enumerate(answers)) and config.label2id["circle"] == 4
    with pytest.raises(ValueError, match="answers"):
        convert.convert_state_dict(
            original_state_dict, original_config=original_config, tasks=["vqa"], id2label={0: "yes"}
        )


def test_text_tower_type_and_heads_without_original_config(original_state_dict):
    assert convert.detect_text_model_type(original_state_dict) == "roberta"  # 1 token-type row
    as_bert = dict(original_state_dict)
    as_bert["text_transformer.embeddings.token_type_embeddings.weight"] = torch.zeros(2, 32)
    assert convert.detect_text_model_type(as_bert) == "bert"
    assert convert.detect_text_model_type(as_bert, "roberta") == "roberta"
    bert_config = convert.infer_text_config(as_bert, "bert", {"num_attention_heads": 4})
    assert (bert_config["pad_token_id"], bert_config["layer_norm_eps"], bert_config["type_vocab_size"]) == (0, 1e-12, 2)
    # hidden size 32 < 64: the heads cannot be guessed from the tensors
    with pytest.raises(ValueError, match="num_attention_heads"):
        convert.convert_state_dict(original_state_dict)
    with pytest.raises(ValueError, match="--num-attention-heads"):
        convert.infer_meter_config_kwargs(original_state_dict, None, {})
    assert convert.infer_meter_config_kwargs(original_state_dict, 8, {})["num_attention_heads"] == 8


def test_load_original_checkpoint_formats(original_state_dict, tmp_path):
    torch.save(original_state_dict, tmp_path / "flat.pt")  # no "state_dict" nesting
    flat = convert.load_original_checkpoint(tmp_path / "flat.pt")
    assert flat.keys() == original_state_dict.keys()
    # a Lightning checkpoint whose hyper-parameters hold an arbitrary object: refused unless --unsafe-load
    torch.save({"state_dict": original_state_dict, "hparams": argparse.Namespace(lr=1e-4)}, tmp_path / "objects.ckpt")
    with pytest.raises(ValueError, match="--unsafe-load"):
        convert.load_original_checkpoint(tmp_path / "objects.ckpt")
    unsafe = convert.load_original_checkpoint(tmp_path / "objects.ckpt", unsafe_load=True)
    assert unsafe.keys() == original_state_dict.keys()


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------


def test_command_line_converts_and_checks_every_output(fixture_dir, tiny_tokenizer_dir, tmp_path):
    command = [
        sys.executable, str(SCRIPT),
        "--checkpoint-path", str(fixture_dir / "checkpoint.ckpt"),
        "--output-dir", str(tmp_path / "converted"),
        "--original-config", str(fixture_dir / "original_config.json"),
        "--tokenizer", str(tiny_tokenizer_dir),
        "--reference-inputs", str(fixture_dir / "inputs.safetensors"),
        "--reference-outputs", str(fixture_dir / "outputs.safetensors"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    printed = dict(re.findall(r"^\s+(\S+)\s+max_abs_diff=(\S+)\s+ok$", result.stdout, flags=re.MULTILINE))
    assert set(printed) == RECORDED_OUTPUTS, result.stdout
    assert max(float(value) for value in printed.values()) <= ATOL

    is_clip = fixture_dir.name == "meter_clip"
    for task in ALL_TASKS:
        folder = tmp_path / "converted" / task
        assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
        image_processor = MeterImageProcessor.from_pretrained(folder)
        assert image_processor.crop_size.height == (48 if is_clip else 64)
        expected_mean = (0.48145466, 0.4578275, 0.40821073) if is_clip else (0.485, 0.456, 0.406)
        assert tuple(image_processor.image_mean) == pytest.approx(expected_mean)
        assert AutoTokenizer.from_pretrained(folder)("a cat")["input_ids"] == [0, 6, 5, 8, 6, 25, 2]
        assert json.loads((folder / "processor_config.json").read_text())["max_text_len"] == 10


def test_command_line_exit_code_is_1_above_atol(fixture_dir, tmp_path):
    outputs = load_file(fixture_dir / "outputs.safetensors")
    outputs["vqa_logits"] = outputs["vqa_logits"] + 1e-2
    save_file(outputs, tmp_path / "perturbed.safetensors")
    argv = [
        "--checkpoint-path", str(fixture_dir / "checkpoint.ckpt"),
        "--output-dir", str(tmp_path / "vqa"),
        "--task", "vqa",
        "--original-config", str(fixture_dir / "original_config.json"),
        "--reference-inputs", str(fixture_dir / "inputs.safetensors"),
        "--reference-outputs", str(tmp_path / "perturbed.safetensors"),
    ]  # fmt: skip
    assert convert.main(argv) == 1
    assert (tmp_path / "vqa" / "model.safetensors").is_file()  # --task: one folder, the output dir itself
    differences = convert.compare_with_reference(
        {"vqa": convert.TASK_CLASSES["vqa"].from_pretrained(tmp_path / "vqa")},
        load_file(fixture_dir / "inputs.safetensors"),
        outputs,
    )
    assert differences["vqa_logits"] == pytest.approx(1e-2, abs=1e-4)
    assert differences["mlm_logits"] is None  # no pre-training head converted
    assert "FAIL" in convert.format_differences(differences, ATOL)
