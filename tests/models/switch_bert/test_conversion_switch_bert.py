"""Parity of `conversion/convert_switch_bert_volta_to_hf.py` against the VOLTA UNITER-CTRL checkpoint written by the
original code (`tests/fixtures/volta_uniter_ctrl`, see its README.md): Switch-BERT's plain path (SAB and SIB off,
joint attention) reproduces every recorded output within 1e-4; initialisation from BERT (the shipped MiniLM).

`conversion/` is a folder of scripts, not a package: the converter is imported from its file path.
"""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_vl import SwitchBertForPreTraining, SwitchBertForQuestionAnswering, SwitchBertModel
from hf_vl.training import local_pretrained_path

REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPT = REPO_ROOT / "conversion" / "convert_switch_bert_volta_to_hf.py"
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "volta_uniter_ctrl"
ATOL = 1e-4


def _import_converter():
    spec = importlib.util.spec_from_file_location("convert_switch_bert_volta_to_hf", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


convert = _import_converter()
REFERENCE = load_file(FIXTURE / "outputs.safetensors")
INPUTS = load_file(FIXTURE / "inputs.safetensors")


@pytest.mark.parametrize("prepend_global_region", [True, False], ids=["model-prepends-global", "inputs-carry-global"])
def test_plain_path_matches_every_recorded_volta_output(prepend_global_region):
    """`prepend_global_region=True` gets the regions without row 0: the model's own [IMG] token (mean of the unmasked
    regions, whole-image box) must reproduce VOLTA's global feature."""
    model = convert.convert(FIXTURE / "pytorch_model_9.bin", FIXTURE / "original_config.json",
                            prepend_global_region=prepend_global_region)
    assert not model.config.use_switch_attention and not model.config.use_switch_input
    diffs = convert.compare_with_reference(convert.hf_outputs(model, INPUTS), REFERENCE, prepend_global_region)
    assert set(diffs) == set(REFERENCE)
    assert max(diffs.values()) < ATOL, diffs


def test_converted_keys_and_itm_rows():
    state = convert.load_original_checkpoint(FIXTURE / "pytorch_model_9.bin")
    assert len(state) == 130
    config = convert.config_from_original(FIXTURE / "original_config.json", state)
    assert (config.num_hidden_layers, config.hidden_size, config.pooler_size, config.num_region_classes) == (3, 32, 48, 1601)
    converted = convert.convert_state_dict(state, config)
    assert len(converted) == 130 - 49 - 1  # 49 vision duplicates and the tied decoder dropped
    assert torch.equal(converted["itm_head.weight"], state["cls.bi_seq_relationship.weight"].flip(0))
    assert set(converted) == set(SwitchBertForPreTraining(config).state_dict()) - {"mlm_head.decoder.weight"}


def test_unshared_or_changed_checkpoints_are_refused():
    state = convert.load_original_checkpoint(FIXTURE / "pytorch_model_9.bin")
    config = convert.config_from_original(FIXTURE / "original_config.json", state)
    broken = dict(state)
    broken["bert.encoder.layer.0.attention_self.v_query.weight"] = broken[
        "bert.encoder.layer.0.attention_self.v_query.weight"] + 1.0
    with pytest.raises(convert.ConversionError, match="v_query"):
        convert.convert_state_dict(broken, config)
    original = convert._original_config_dict(FIXTURE / "original_config.json")
    with pytest.raises(convert.ConversionError, match="shared_sublayers"):
        convert.config_from_original({**original, "shared_sublayers": [0, 1]}, state)


def test_switching_conversion_starts_from_the_checkpoint_and_joint_only_routing_is_the_plain_model():
    plain = convert.convert(FIXTURE / "pytorch_model_9.bin", FIXTURE / "original_config.json")
    routed = convert.convert(FIXTURE / "pytorch_model_9.bin", FIXTURE / "original_config.json", switching=True)
    assert routed.config.use_switch_attention and routed.config.use_switch_input
    plain_state = plain.state_dict()
    for name, tensor in routed.state_dict().items():
        if "_switcher." not in name:
            assert torch.equal(tensor, plain_state[name]), name
    joint_only = convert.convert(FIXTURE / "pytorch_model_9.bin", FIXTURE / "original_config.json", switching=True,
                                 allowed_modes=[3], use_switch_input=False)
    torch.testing.assert_close(convert.hf_outputs(joint_only, INPUTS)["pooled_output"],
                               convert.hf_outputs(plain, INPUTS)["pooled_output"])


def test_command_line_checks_parity_and_saves(tmp_path, capsys):
    """The script's `main` (what the command line runs, here in-process): parity report, then the saved folder."""
    arguments = ["--checkpoint-path", str(FIXTURE / "pytorch_model_9.bin"),
                 "--original-config", str(FIXTURE / "original_config.json"), "--output-dir", str(tmp_path / "out"),
                 "--reference-inputs", str(FIXTURE / "inputs.safetensors"),
                 "--reference-outputs", str(FIXTURE / "outputs.safetensors")]
    assert convert.main(arguments) == 0
    assert "prediction_scores_v.0" in capsys.readouterr().out
    reloaded = SwitchBertModel.from_pretrained(tmp_path / "out")
    assert not reloaded.config.use_switch_attention
    assert convert.main([*arguments[:4], "--output-dir", str(tmp_path / "strict"), "--atol", "1e-9",
                         *arguments[6:]]) == 1  # a tolerance the float32 re-implementation cannot meet fails


def test_from_bert_pretrained_copies_the_minilm_weights():
    from transformers import AutoModel

    path = local_pretrained_path("all-MiniLM-L6-v2")
    bert = AutoModel.from_pretrained(path, add_pooling_layer=False)
    model = SwitchBertForQuestionAnswering.from_bert_pretrained(bert, num_hidden_layers=2, visual_feat_dim=16,
                                                                num_labels=4)
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (384, 2, bert.config.vocab_size)
    own = model.switch_bert.state_dict()
    bert_state = bert.state_dict()
    for key in ("embeddings.word_embeddings.weight", "embeddings.LayerNorm.bias"):
        assert torch.equal(own[key], bert_state[key])
    assert torch.equal(own["layers.1.attention.self.query.weight"], bert_state["encoder.layer.1.attention.self.query.weight"])
    assert torch.equal(own["layers.1.output.LayerNorm.weight"], bert_state["encoder.layer.1.output.LayerNorm.weight"])
    assert torch.equal(own["embeddings.v_LayerNorm.weight"], bert_state["embeddings.LayerNorm.weight"])
    # plain path on text-like inputs: the text stream of layer 1 is BERT's layer when it can only attend text
    plain = SwitchBertModel.from_bert_pretrained(bert, num_hidden_layers=1, visual_feat_dim=16,
                                                 use_switch_attention=False, use_switch_input=False,
                                                 fixed_attention_mode=0).eval()
    input_ids = torch.tensor([[101, 2054, 2003, 2023, 102]])
    with torch.no_grad():
        ours = plain(input_ids=input_ids, visual_feats=torch.randn(1, 3, 16),
                     visual_pos=torch.tensor([[[0.1, 0.1, 0.5, 0.5, 0.16]] * 3])).text_features
        bert_layers = AutoModel.from_pretrained(path, add_pooling_layer=False, num_hidden_layers=1).eval()
        reference = bert_layers(input_ids=input_ids).last_hidden_state
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="num_hidden_layers"):
        SwitchBertModel.from_bert_pretrained(bert, num_hidden_layers=7)
