"""Parity of `conversion/convert_vlmo_original_to_hf.py` with the original VLMo code: `tests/fixtures/vlmo/` holds a
tiny checkpoint written by microsoft/unilm `vlmo/` in its own format, fixed inputs and the original outputs (see the
README.md there). Every recorded output must be matched within 1e-4.

`conversion/` is a folder of scripts, not a package: the converter is imported from its file path.
"""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_vl import VlmoForPreTraining
from hf_vl.models.vlmo.modeling_vlmo import _l2_normalize

REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPT = REPO_ROOT / "conversion" / "convert_vlmo_original_to_hf.py"
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "vlmo"
ATOL = 1e-4


def _import_converter():
    spec = importlib.util.spec_from_file_location("convert_vlmo_original_to_hf", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


convert = _import_converter()


@pytest.fixture(scope="module")
def recorded():
    return load_file(FIXTURE / "inputs.safetensors"), load_file(FIXTURE / "outputs.safetensors")


@pytest.fixture(scope="module")
def models():
    return {head: convert.convert_checkpoint(FIXTURE / "checkpoint.pt", head)[0]
            for head in ("pretraining", "vqa", "nlvr2", "mlm", "retrieval")}


def _reproduce(models, inputs) -> dict[str, torch.Tensor]:
    text = {"input_ids": inputs["text_ids"], "attention_mask": inputs["text_masks"]}
    image = inputs["image"]
    pretraining = models["pretraining"]
    vlmo = pretraining.vlmo
    out = {}
    with torch.no_grad():
        fused = vlmo(**text, pixel_values=image)
        out["infer.cls_feats"] = fused.pooler_output
        out["infer.text_feats"] = fused.text_features
        out["infer.image_feats"] = fused.image_features
        out["infer.raw_cls_feats"] = fused.last_hidden_state[:, 0]
        image_side = vlmo.get_image_features(image)
        text_side = vlmo.get_text_features(**text)
        out["infer_image_ft.cls_feats"] = out["infer_image.cls_feats"] = image_side.pooler_output
        out["infer_image_ft.image_feats"] = image_side.last_hidden_state
        out["infer_text_ft.cls_feats"] = out["infer_text.cls_feats"] = text_side.pooler_output
        out["infer_text_ft.text_feats"] = text_side.last_hidden_state
        vl_text = vlmo.encode_text(text["input_ids"], text["attention_mask"], with_vl_branch=True)["vl_features"]
        vl_image = vlmo.encode_image(image, with_vl_branch=True)["vl_features"]
        out["infer_text.cls_vlffn_feats"] = _l2_normalize(pretraining.itc_vl_text_proj(vl_text[:, 0]))
        out["infer_image.cls_vlffn_feats"] = _l2_normalize(pretraining.itc_vl_image_proj(vl_image[:, 0]))
        pre = pretraining(**text, pixel_values=image)
        out["itc_logits_per_image"] = pre.logits_per_image
        out["itc_vl_logits_per_image"] = pre.vl_logits_per_image
        out["itm_logits"] = pre.itm_logits
        out["mlm_logits"] = pre.mlm_logits
        out["logit_scale"] = vlmo.logit_scale
        out["logit_vl_scale"] = pretraining.logit_vl_scale
        out["textmlm_logits"] = models["mlm"](**text).logits
        out["vqa_logits"] = models["vqa"](**text, pixel_values=image).logits
        nlvr2 = models["nlvr2"]
        pair = torch.stack([inputs["image_0"], inputs["image_1"]], dim=1)
        out["nlvr2_logits"] = nlvr2(**text, pixel_values=pair).logits
        out["nlvr2.infer1.cls_feats"] = nlvr2.vlmo(**text, pixel_values=inputs["image_0"]).pooler_output
        second = nlvr2.vlmo(**text, pixel_values=inputs["image_1"], image_token_type_idx=2)
        out["nlvr2.infer2.cls_feats"] = second.pooler_output
        out["nlvr2.infer2.image_feats"] = second.image_features
        retrieval = models["retrieval"](**text, pixel_values=image)
        out["retrieval.logits_per_image"] = retrieval.logits_per_image
    return out


def test_every_recorded_output_is_matched(models, recorded):
    inputs, expected = recorded
    actual = _reproduce(models, inputs)
    missing = sorted(set(expected) - set(actual))
    assert not missing, f"recorded outputs not reproduced: {missing}"
    worst = {}
    for name, reference in expected.items():
        assert actual[name].shape == reference.shape, name
        worst[name] = (actual[name].float() - reference.float()).abs().max().item()
    assert max(worst.values()) <= ATOL, {k: v for k, v in worst.items() if v > ATOL}
    # the dual-encoder retrieval head scores exactly like the pre-training ITC
    torch.testing.assert_close(actual["retrieval.logits_per_image"], expected["itc_logits_per_image"], atol=ATOL, rtol=0)


def test_perturbing_any_converted_weight_changes_some_output(models, recorded):
    """Every converted tensor matters (the fixture re-drew all weights), so a mis-mapped one could not pass."""
    inputs, _ = recorded
    model = models["pretraining"]

    def fused_cls():
        with torch.no_grad():
            return model.vlmo(input_ids=inputs["text_ids"], attention_mask=inputs["text_masks"],
                              pixel_values=inputs["image"]).pooler_output

    reference = fused_cls()
    for name in ("vlmo.layers.3.vl_expert.fc2.bias", "vlmo.layers.0.attention.v_bias",
                 "vlmo.relative_position_bias_table", "vlmo.layers.1.gamma_2"):
        param = model.get_parameter(name)
        saved = param.detach().clone()
        with torch.no_grad():  # a random (not constant: softmax ignores a constant bias) perturbation
            param.add_(0.5 * torch.randn(param.shape, generator=torch.Generator().manual_seed(0)))
        try:
            changed = fused_cls()
        finally:
            with torch.no_grad():
                param.copy_(saved)
        assert (changed - reference).abs().max() > 1e-3, name


def test_inferred_config_and_dropped_keys():
    state_dict = convert.load_original_state_dict(FIXTURE / "checkpoint.pt")
    config = convert.config_from_state_dict(state_dict)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (32, 4, 4)
    assert (config.vl_ffn_start_layer, config.image_size, config.patch_size) == (2, 48, 16)
    assert (config.max_text_len, config.max_relative_text_length, config.vocab_size) == (8, 12, 110)
    assert config.modality_type_vocab_size == 3 and config.num_labels == 7 and config.layer_scale_init_value
    assert convert.available_heads(state_dict) == ["base", "retrieval", "mlm", "pretraining", "vqa", "nlvr2"]
    _, unused = convert.convert_state_dict(state_dict, config, "pretraining")
    assert {"relative_position_index", "text_relative_position_index", "text_imag_relative_position_index",
            "text_embeddings.position_ids", "text_embeddings.position_embeddings.weight"} <= set(unused)
    assert not any(key.startswith(("transformer.", "itm_score", "mlm_score")) for key in unused)


def test_wrapped_checkpoints_and_deepspeed_prefix(tmp_path):
    state_dict = convert.load_original_state_dict(FIXTURE / "checkpoint.pt")
    torch.save({"module": {f"module.{k}": v for k, v in state_dict.items()}}, tmp_path / "ds.pt")
    torch.save({"state_dict": state_dict}, tmp_path / "pl.pt")
    for name in ("ds.pt", "pl.pt"):
        loaded = convert.load_original_state_dict(tmp_path / name)
        assert loaded.keys() == state_dict.keys()


def test_tampered_index_tensor_is_refused(tmp_path):
    state_dict = convert.load_original_state_dict(FIXTURE / "checkpoint.pt")
    state_dict["relative_position_index"] = state_dict["relative_position_index"].flip(0)
    torch.save(state_dict, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="relative_position_index"):
        convert.convert_checkpoint(tmp_path / "bad.pt", "base")


def test_command_line_saves_a_loadable_folder(tmp_path, recorded):
    convert.main(["--checkpoint", str(FIXTURE / "checkpoint.pt"), "--output_dir", str(tmp_path), "--head", "auto"])
    inputs, expected = recorded
    model = VlmoForPreTraining.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        out = model(input_ids=inputs["text_ids"], attention_mask=inputs["text_masks"], pixel_values=inputs["image"])
    torch.testing.assert_close(out.itm_logits, expected["itm_logits"], atol=ATOL, rtol=0)


def test_converting_for_a_larger_image_size_resizes_the_relative_position_table(recorded):
    inputs, _ = recorded
    model, _ = convert.convert_checkpoint(FIXTURE / "checkpoint.pt", "retrieval", image_size=80)
    reference, _ = convert.convert_checkpoint(FIXTURE / "checkpoint.pt", "retrieval")
    vlmo, old = model.vlmo, reference.vlmo
    assert model.config.image_size == 80 and vlmo.image_relative_position_index.shape == (26, 26)
    new_table, old_table = vlmo.relative_position_bias_table, old.relative_position_bias_table
    assert new_table.shape == ((2 * 5 - 1) ** 2 + 3 + 2 * 12 + 2, 16)
    # offsets (0, 0) and the extreme offsets keep their values (aligned corners); [I_CLS] and text rows are kept
    torch.testing.assert_close(new_table[4 * 9 + 4], old_table[2 * 5 + 2])
    torch.testing.assert_close(new_table[0], old_table[0])
    torch.testing.assert_close(new_table[9 * 9 - 1], old_table[5 * 5 - 1])
    torch.testing.assert_close(new_table[81:], old_table[25:])
    pixels = torch.nn.functional.interpolate(inputs["image"], size=(80, 80), mode="bilinear")
    with torch.no_grad():
        out = model(input_ids=inputs["text_ids"], attention_mask=inputs["text_masks"], pixel_values=pixels)
        same_text = reference(input_ids=inputs["text_ids"], attention_mask=inputs["text_masks"],
                              pixel_values=inputs["image"])
    assert out.image_embeds.shape == (2, 32) and torch.isfinite(out.logits_per_image).all()
    torch.testing.assert_close(out.text_embeds, same_text.text_embeds)  # the text side is untouched


def test_base_plus_layout_checkpoint_uses_absolute_positions(tmp_path, recorded):
    """A Base-Plus-style file (absolute image `pos_embed`, no relative table, no layer scale) converts into the
    absolute-position layout, and both position tables are used."""
    state_dict = convert.load_original_state_dict(FIXTURE / "checkpoint.pt")
    for key in [k for k in state_dict if "relative_position" in k or ".gamma_" in k or k == "text_imag_relative_position_index"]:
        state_dict.pop(key)
    state_dict["transformer.pos_embed"] = torch.randn(1, 10, 32, generator=torch.Generator().manual_seed(0))
    torch.save(state_dict, tmp_path / "base_plus.pt")
    model, unused = convert.convert_checkpoint(tmp_path / "base_plus.pt", "retrieval", num_attention_heads=4)
    config = model.config
    assert not config.use_relative_position_bias and config.use_absolute_position_embeddings
    assert config.layer_scale_init_value is None and config.image_size == 48 and config.max_text_len == 8
    assert "text_embeddings.position_embeddings.weight" not in unused
    torch.testing.assert_close(model.vlmo.text_embeddings.position_embeddings.weight,
                               state_dict["text_embeddings.position_embeddings.weight"])
    torch.testing.assert_close(model.vlmo.image_embeddings.position_embeddings, state_dict["transformer.pos_embed"])
    inputs, _ = recorded
    with torch.no_grad():
        before = model(input_ids=inputs["text_ids"], pixel_values=inputs["image"])
        model.vlmo.text_embeddings.position_embeddings.weight.add_(torch.randn(8, 32))  # not constant: LayerNorm
        model.vlmo.image_embeddings.position_embeddings.add_(torch.randn(1, 10, 32))
        after = model(input_ids=inputs["text_ids"], pixel_values=inputs["image"])
    assert not torch.allclose(before.text_embeds, after.text_embeds)
    assert not torch.allclose(before.image_embeds, after.image_embeds)
    with pytest.raises(ValueError, match="num_attention_heads"):
        convert.convert_checkpoint(tmp_path / "base_plus.pt", "retrieval")
