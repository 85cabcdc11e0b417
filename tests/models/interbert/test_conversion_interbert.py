"""Parity tests of `conversion/convert_interbert_original_to_hf.py` against the two checkpoints written by the original
InterBERT code (`tests/fixtures/interbert`, see its README.md): every recorded output within 1e-4.

`conversion/` is a folder of scripts, not a package: the converter is imported from its file path.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_vl import (
    InterBertForImageAndTextRetrieval,
    InterBertForMultipleChoice,
    InterBertForPreTraining,
    InterBertForQuestionAnswering,
    InterBertModel,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPT = REPO_ROOT / "conversion" / "convert_interbert_original_to_hf.py"
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "interbert"
ATOL = 1e-4


def _import_converter():
    spec = importlib.util.spec_from_file_location("convert_interbert_original_to_hf", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


convert = _import_converter()
REFERENCE = load_file(FIXTURE / "outputs.safetensors")
INPUTS = load_file(FIXTURE / "inputs.safetensors")
TASKS_OUTPUTS = {name for name in REFERENCE if not name.startswith("pretraining.")}
PRETRAINING_OUTPUTS = {name for name in REFERENCE if name.startswith("pretraining.")}


def _parity(checkpoint, prepend_global_region):
    models, extras = convert.convert(FIXTURE / checkpoint, FIXTURE / "original_config.json",
                                     prepend_global_region=prepend_global_region)
    config = next(iter(models.values())).config
    prefix = "" if "vqa" in models else "pretraining."
    actual = convert.hf_outputs({type(m): m for m in models.values()}, extras, INPUTS, config, prefix)
    names = {name: name if prefix else convert.TASKS_OUTPUT_NAMES.get(name, name) for name in actual}
    names = {name: ref for name, ref in names.items() if ref in REFERENCE}
    return models, extras, convert.compare_with_reference(actual, REFERENCE, names)


@pytest.mark.parametrize("prepend_global_region", [True, False], ids=["model-prepends-global", "inputs-carry-global"])
def test_fine_tuning_checkpoint_matches_every_recorded_output(prepend_global_region):
    """`prepend_global_region=True` gets the inputs without row 0: the model's own global feature (mean of the
    unmasked regions, whole-image box) must reproduce the original data loader's row 0."""
    models, extras, diffs = _parity("pytorch_model.bin", prepend_global_region)
    assert set(diffs) == TASKS_OUTPUTS
    assert max(diffs.values()) < ATOL, diffs
    assert set(models) == {"pretraining", "vqa", "retrieval", "multiple_choice"}
    assert sorted(extras) == ["linguisic_logit.bias", "linguisic_logit.weight", "vision_logit.bias",
                              "vision_logit.weight"]
    assert models["vqa"].config.num_labels == 7


@pytest.mark.parametrize("prepend_global_region", [True, False])
def test_pretraining_checkpoint_matches_every_recorded_output(prepend_global_region):
    models, extras, diffs = _parity("pretraining_pytorch_model.bin", prepend_global_region)
    assert set(diffs) == PRETRAINING_OUTPUTS
    assert max(diffs.values()) < ATOL, diffs
    assert set(models) == {"pretraining"} and extras == {}


def test_converted_config_and_keys():
    state = convert.load_original_checkpoint(FIXTURE / "pytorch_model.bin")
    config = convert.config_from_original(FIXTURE / "original_config.json", state)
    assert (config.num_interaction_layers, config.num_text_extraction_layers, config.num_image_extraction_layers) == (2, 2, 2)
    assert (config.image_num_attention_heads, config.image_intermediate_size, config.pooler_size) == (2, 48, 48)
    assert (config.visual_feat_dim, config.visual_pos_dim, config.num_region_classes) == (16, 5, 11)
    converted, _ = convert.convert_state_dict(state, config)
    pretraining = converted[InterBertForPreTraining]
    torch.testing.assert_close(pretraining["interbert.text_extraction_layers.0.output.dense.weight"],
                               state["bert.encoder.layer.2.output.dense.weight"])
    torch.testing.assert_close(pretraining["interbert.interaction_layers.1.attention.self.key.bias"],
                               state["bert.encoder.layer.1.attention.self.key.bias"])
    # ITM rows swapped: the original's index 0 means "match", hf_vl's index 1 does
    torch.testing.assert_close(pretraining["itm_head.weight"], state["cls.bi_seq_relationship.weight"].flip(0))
    torch.testing.assert_close(converted[InterBertForMultipleChoice]["classifier.weight"], state["vil_logit.weight"])
    model = convert.load_converted_model(InterBertForPreTraining, pretraining, config)
    assert model.msm_head.decoder.weight is model.interbert.embeddings.word_embeddings.weight


def test_untied_decoder_and_unknown_keys_are_refused():
    state = convert.load_original_checkpoint(FIXTURE / "pytorch_model.bin")
    config = convert.config_from_original(FIXTURE / "original_config.json", state)
    broken = dict(state, **{"cls.predictions.decoder.weight": state["cls.predictions.decoder.weight"] + 1})
    with pytest.raises(convert.ConversionError, match="word embeddings"):
        convert.convert_state_dict(broken, config)
    with pytest.raises(convert.ConversionError, match="unknown original key `vil_tri_prediction.weight`"):
        convert.convert_state_dict(dict(state, **{"vil_tri_prediction.weight": torch.zeros(3, 48)}), config)
    with pytest.raises(convert.ConversionError, match="text layers"):
        convert.config_from_original(FIXTURE / "original_config.json",
                                     {k: v for k, v in state.items() if "encoder.layer.3." not in k})


def test_non_state_dict_file_is_refused(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.bin")
    with pytest.raises(convert.ConversionError, match="state dict"):
        convert.load_original_checkpoint(tmp_path / "list.bin")
    torch.save({"foo.weight": torch.zeros(1)}, tmp_path / "other.bin")
    with pytest.raises(convert.ConversionError, match="bert"):
        convert.load_original_checkpoint(tmp_path / "other.bin")


def test_command_line_converts_checks_and_saves_loadable_folders(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--checkpoint-path", str(FIXTURE / "pytorch_model.bin"),
         "--original-config", str(FIXTURE / "original_config.json"), "--output-dir", str(tmp_path),
         "--reference-inputs", str(FIXTURE / "inputs.safetensors"),
         "--reference-outputs", str(FIXTURE / "outputs.safetensors")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "vil_prediction: max abs diff" in result.stdout and "vision_logit" in result.stdout
    vqa = InterBertForQuestionAnswering.from_pretrained(tmp_path / "vqa").eval()
    base = InterBertModel.from_pretrained(tmp_path / "retrieval")
    assert isinstance(InterBertForImageAndTextRetrieval.from_pretrained(tmp_path / "retrieval"),
                      InterBertForImageAndTextRetrieval)
    kwargs = convert.reference_inputs(INPUTS, vqa.config)
    with torch.no_grad():
        torch.testing.assert_close(vqa(**kwargs).logits, REFERENCE["vil_prediction"], atol=ATOL, rtol=0)
        torch.testing.assert_close(base(**kwargs).text_features, REFERENCE["bert.sequence_output_t"], atol=ATOL,
                                   rtol=0)
