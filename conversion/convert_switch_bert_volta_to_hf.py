"""Convert a VOLTA UNITER-CTRL checkpoint (https://github.com/e-bug/volta, MIT; `BertForVLPreTraining` saved as a bare
`state_dict`, e.g. the released `pytorch_model_9.bin`) to hf_vl Switch-BERT (`SwitchBertForPreTraining`).

VOLTA's controlled UNITER is a single-stream BERT written as VOLTA's two-stream sub-layers with every sub-layer shared
between the streams and one LayerNorm: exactly Switch-BERT's plain path (SAB and SIB off, joint attention). By default
the converted model is that plain model (`use_switch_attention=False, use_switch_input=False`), which reproduces the
original outputs; `--switching` converts into a full Switch-BERT whose switchers are new (initialised as a fresh model)
and every other weight comes from the checkpoint.

Key mapping (timm-style regex table + small named fix-ups):
- `bert.encoder.layer.{2i}` (attention sub-layer) and `bert.encoder.layer.{2i+1}` (feed-forward sub-layer) become
  `switch_bert.layers.{i}` with HF BERT names (`attention.self.query`, `attention.output.LayerNorm`, `intermediate`,
  `output`);
- the vision copies of the shared sub-layers (`v_query`, `v_key`, `v_value`, `v_dense`, `v_LayerNorm` of the
  sub-layers) and `bert.embeddings.image_token_type_embeddings` hold the same values as their text counterparts:
  checked equal, then dropped (49 keys);
- UNITER image embeddings keep VOLTA's names (`image_embeddings`, `image_location_embeddings`, `image_layer_norm`,
  `image_location_layer_norm`, `v_LayerNorm`);
- `t_pooler` / `v_pooler` (Linear to `pooler_size` + ReLU) -> `text_pooler` / `image_pooler`;
- `cls.predictions` -> `mlm_head` (the decoder is the tied word embedding matrix: checked equal, then dropped);
  `cls.imagePredictions.decoder_dict.0` (KL target "0", 1601 classes) -> `mrm_head`;
- `cls.bi_seq_relationship` -> `itm_head` with its two rows swapped: VOLTA's ITM index 0 means "match"
  (`is_next == 0`), hf_vl's index 1 does.

VOLTA's loaders put the global image feature in row 0 (`add_global_imgfeat="first"`); hf_vl prepends it itself
(`prepend_global_region=True`, the default here). Pass `--inputs-include-global-region` for inputs that carry it.

Usage:

    python conversion/convert_switch_bert_volta_to_hf.py --checkpoint-path pytorch_model_9.bin \\
        --original-config ctrl_uniter_base.json --output-dir converted/switch_bert

    # checked against outputs recorded with the original code:
    python conversion/convert_switch_bert_volta_to_hf.py \\
        --checkpoint-path tests/fixtures/volta_uniter_ctrl/pytorch_model_9.bin \\
        --original-config tests/fixtures/volta_uniter_ctrl/original_config.json --output-dir /tmp/switch_bert \\
        --reference-inputs tests/fixtures/volta_uniter_ctrl/inputs.safetensors \\
        --reference-outputs tests/fixtures/volta_uniter_ctrl/outputs.safetensors

`load_original_checkpoint`, `config_from_original`, `convert_state_dict`, `convert`, `hf_outputs` and
`compare_with_reference` are the reusable part (the tests import this file by path).
"""

import argparse
import json
import re
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from hf_vl.models.switch_bert.configuration_switch_bert import SwitchBertConfig
from hf_vl.models.switch_bert.modeling_switch_bert import SwitchBertForPreTraining


class ConversionError(ValueError):
    """The checkpoint or config cannot be converted (missing/unknown keys, shapes, unsupported options)."""


_SUBLAYER = re.compile(r"^bert\.encoder\.layer\.(\d+)\.(.+)$")
# within an attention sub-layer (2i) / a feed-forward sub-layer (2i+1): VOLTA name -> HF BERT name
_ATTENTION_RENAMES = {
    "attention_self.query.": "attention.self.query.",
    "attention_self.key.": "attention.self.key.",
    "attention_self.value.": "attention.self.value.",
    "attention_output.dense.": "attention.output.dense.",
    "attention_output.LayerNorm.": "attention.output.LayerNorm.",
}
_FEED_FORWARD_RENAMES = {
    "intermediate.dense.": "intermediate.dense.",
    "output.dense.": "output.dense.",
    "output.LayerNorm.": "output.LayerNorm.",
}
# vision copies of shared modules: VOLTA name -> its text counterpart (same sub-layer)
_VISION_DUPLICATES = {
    "attention_self.v_query.": "attention_self.query.",
    "attention_self.v_key.": "attention_self.key.",
    "attention_self.v_value.": "attention_self.value.",
    "attention_output.v_dense.": "attention_output.dense.",
    "attention_output.v_LayerNorm.": "attention_output.LayerNorm.",
    "intermediate.v_dense.": "intermediate.dense.",
    "output.v_dense.": "output.dense.",
    "output.v_LayerNorm.": "output.LayerNorm.",
}
_TOP_LEVEL_RENAMES = [
    (r"^bert\.embeddings\.(word_embeddings|position_embeddings|token_type_embeddings|LayerNorm|image_embeddings|"
     r"image_location_embeddings|image_layer_norm|image_location_layer_norm|v_LayerNorm)\.",
     r"switch_bert.embeddings.\1."),
    (r"^bert\.t_pooler\.", "switch_bert.text_pooler."),
    (r"^bert\.v_pooler\.", "switch_bert.image_pooler."),
    (r"^cls\.predictions\.transform\.", "mlm_head.transform."),
    (r"^cls\.predictions\.bias$", "mlm_head.bias"),
    (r"^cls\.imagePredictions\.transform\.", "mrm_head.transform."),
    (r"^cls\.imagePredictions\.decoder_dict\.0\.", "mrm_head.decoder."),
    (r"^cls\.bi_seq_relationship\.", "itm_head."),
]
_DROPPED_DUPLICATES = {
    "bert.embeddings.image_token_type_embeddings.weight": "bert.embeddings.token_type_embeddings.weight",
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
}


def load_original_checkpoint(path) -> dict[str, torch.Tensor]:
    """The original bare state dict, read with `torch.load(weights_only=True)` (no arbitrary unpickling)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise ConversionError(f"{path}: expected a non-empty state dict, got {type(state).__name__}.")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    if "bert.embeddings.image_location_layer_norm.weight" not in state:
        raise ConversionError(f"{path}: no UNITER image embeddings (`bert.embeddings.image_location_layer_norm`); "
                              "is this a VOLTA UNITER checkpoint?")
    return state


def _original_config_dict(config) -> dict:
    """The VOLTA config (a `ctrl_uniter_base.json` dict, or the fixture's wrapper holding one under `config_json`)."""
    if isinstance(config, (str, Path)):
        config = json.loads(Path(config).read_text())
    return config.get("config_json", config)


def config_from_original(original_config, state: dict, prepend_global_region: bool = True,
                         switching: bool = False, **overrides) -> SwitchBertConfig:
    """A [`SwitchBertConfig`] for a VOLTA UNITER-CTRL config; raises `ConversionError` when the VOLTA model is not
    single-stream (unshared sub-layers, separate LayerNorms, missing attention blocks, another image embedding)."""
    original = _original_config_dict(original_config)
    attention = sorted(set(original["tt_attn_sublayers"]))
    depth = len(attention) * 2
    everything = list(range(depth))
    for name in ("tv_attn_sublayers", "vt_attn_sublayers", "vv_attn_sublayers"):
        if sorted(set(original[name])) != attention:
            raise ConversionError(f"`{name}` = {original[name]}: not a single-stream model (needs {attention}).")
    for name in ("shared_sublayers", "single_ln_sublayers"):
        if sorted(set(original.get(name, []))) != everything:
            raise ConversionError(f"`{name}` = {original.get(name)}: every sub-layer must be shared ({everything}).")
    if original.get("image_embeddings") != "uniter":
        raise ConversionError(f"`image_embeddings` = {original.get('image_embeddings')!r}: only 'uniter' converts.")
    if original.get("fusion_method", "mul") != "mul":
        raise ConversionError(f"`fusion_method` = {original['fusion_method']!r}: Switch-BERT fuses with 'mul'.")
    if original.get("v_hidden_size", original["hidden_size"]) != original["hidden_size"]:
        raise ConversionError("`v_hidden_size` must equal `hidden_size` in a single-stream model.")
    for name in ("sublayer2attn_hidden_size", "sublayer2num_attention_heads", "sublayer2intermediate_size"):
        if original.get(name):
            raise ConversionError(f"`{name}` = {original[name]}: per-sub-layer sizes do not convert.")
    if "cls.imagePredictions.decoder_dict.0.weight" not in state:
        raise ConversionError("no KL region head `cls.imagePredictions.decoder_dict.0` in the checkpoint.")
    fields = dict(
        vocab_size=original["vocab_size"],
        hidden_size=original["hidden_size"],
        num_hidden_layers=len(attention),
        num_attention_heads=original["num_attention_heads"],
        intermediate_size=original["intermediate_size"],
        hidden_act=original.get("hidden_act", "gelu"),
        hidden_dropout_prob=original.get("hidden_dropout_prob", 0.1),
        attention_probs_dropout_prob=original.get("attention_probs_dropout_prob", 0.1),
        max_position_embeddings=original["max_position_embeddings"],
        type_vocab_size=original.get("type_vocab_size", 2),
        pad_token_id=original.get("pad_token_id", 0),
        layer_norm_eps=original.get("layer_norm_eps", 1e-12),
        initializer_range=original.get("initializer_range", 0.02),
        visual_feat_dim=original["v_feature_size"],
        visual_pos_dim=original.get("num_locs", 5),
        region_token_type_id=1,
        prepend_global_region=prepend_global_region,
        num_region_classes=state["cls.imagePredictions.decoder_dict.0.weight"].shape[0],
        pooler_size=original["pooler_size"],
        pooler_act="relu" if original.get("fusion_act", "relu") == "relu" else "tanh",
        qa_hidden_size=original.get("clf_hidden_size", 2 * original["hidden_size"]),
        use_switch_attention=switching,
        use_switch_input=switching,
        fixed_attention_mode=3,
    )
    fields.update(overrides)
    return SwitchBertConfig(**fields)


def convert_state_dict(state: dict[str, torch.Tensor], config: SwitchBertConfig) -> dict[str, torch.Tensor]:
    """VOLTA keys -> `SwitchBertForPreTraining` keys; checks and drops the duplicated vision copies."""
    state = dict(state)
    for duplicate, original in _DROPPED_DUPLICATES.items():
        if duplicate in state:
            if not torch.equal(state[duplicate], state[original]):
                raise ConversionError(f"`{duplicate}` differs from `{original}`: the modules are not shared.")
            del state[duplicate]
    converted = {}
    for key, tensor in state.items():
        match = _SUBLAYER.match(key)
        if match:
            sublayer, rest = int(match.group(1)), match.group(2)
            for vision, text in _VISION_DUPLICATES.items():
                if rest.startswith(vision):
                    twin = f"bert.encoder.layer.{sublayer}.{text}{rest[len(vision):]}"
                    if twin not in state or not torch.equal(tensor, state[twin]):
                        raise ConversionError(f"`{key}` differs from `{twin}`: the sub-layer is not shared.")
                    break
            else:
                renames = _ATTENTION_RENAMES if sublayer % 2 == 0 else _FEED_FORWARD_RENAMES
                prefix = next((name for name in renames if rest.startswith(name)), None)
                if prefix is None:
                    raise ConversionError(f"unknown sub-layer key `{key}`")
                converted[f"switch_bert.layers.{sublayer // 2}.{renames[prefix]}{rest[len(prefix):]}"] = tensor
            continue
        for pattern, replacement in _TOP_LEVEL_RENAMES:
            if re.match(pattern, key):
                converted[re.sub(pattern, replacement, key)] = tensor
                break
        else:
            raise ConversionError(f"unknown key `{key}`")
    for name in ("itm_head.weight", "itm_head.bias"):  # VOLTA index 0 = match -> hf_vl index 1 = match
        converted[name] = converted[name].flip(0).contiguous()
    return converted


def convert(checkpoint_path, original_config, prepend_global_region: bool = True, switching: bool = False,
            **overrides) -> SwitchBertForPreTraining:
    """Builds the converted `SwitchBertForPreTraining` (eval mode). Every checkpoint weight is used; the only new
    weights allowed are the switchers (`switching=True`)."""
    state = load_original_checkpoint(checkpoint_path)
    config = config_from_original(original_config, state, prepend_global_region, switching, **overrides)
    converted = convert_state_dict(state, config)
    model = SwitchBertForPreTraining(config)
    result = model.load_state_dict(converted, strict=False)
    missing = [key for key in result.missing_keys if key != "mlm_head.decoder.weight" and "_switcher." not in key]
    if missing or result.unexpected_keys:
        raise ConversionError(f"missing keys {missing[:8]}, unexpected keys {result.unexpected_keys[:8]}")
    model.tie_weights()
    return model.eval()


def hf_outputs(model: SwitchBertForPreTraining, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The converted model's outputs under the fixture's names, for VOLTA inputs (`image_feat`, `image_loc`,
    `image_attention_mask` with the global feature in row 0; dropped here when the model prepends its own)."""
    feats, locs, image_mask = inputs["image_feat"], inputs["image_loc"], inputs["image_attention_mask"]
    if model.config.prepend_global_region:
        feats, locs, image_mask = feats[:, 1:], locs[:, 1:], image_mask[:, 1:]
    model_inputs = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        token_type_ids=inputs["token_type_ids"], visual_feats=feats, visual_pos=locs,
                        visual_attention_mask=image_mask)
    with torch.no_grad():
        base = model.switch_bert(**model_inputs, output_hidden_states=True)
        heads = model(**model_inputs)
    text_length = inputs["input_ids"].shape[1]
    embeddings = base.hidden_states[0]
    outputs = {
        "bert.embeddings.text": embeddings[:, :text_length],
        "bert.embeddings.vision": embeddings[:, text_length:],
        "bert.sequence_output_t": base.text_features,
        "bert.sequence_output_v": base.image_features,
        "bert.pooled_output_t": base.text_pooler_output,
        "bert.pooled_output_v": base.image_pooler_output,
        "pooled_output": base.pooler_output,
        "prediction_scores_t": heads.mlm_logits,
        "prediction_scores_v.0": heads.mrm_logits,
        "seq_relationship_score": heads.itm_logits.flip(-1),  # back to VOLTA's order (index 0 = match)
    }
    return outputs


def compare_with_reference(actual: dict, reference: dict, prepend_global_region: bool) -> dict[str, float]:
    """Max absolute difference per output. The region head of a model that prepends the global region has no row
    for it: the reference's row 0 is left out there."""
    diffs = {}
    for name, value in actual.items():
        expected = reference[name]
        if name == "prediction_scores_v.0" and prepend_global_region:
            expected = expected[:, 1:]
        if tuple(value.shape) != tuple(expected.shape):
            raise ConversionError(f"{name}: shape {tuple(value.shape)} != reference {tuple(expected.shape)}")
        diffs[name] = float((value - expected).abs().max())
    return diffs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint-path", required=True, type=Path)
    parser.add_argument("--original-config", required=True, type=Path)
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument("--inputs-include-global-region", action="store_true",
                        help="the inputs carry the global image feature in row 0 (VOLTA's loaders)")
    parser.add_argument("--switching", action="store_true",
                        help="a full Switch-BERT (SAB + SIB) with new switchers instead of the plain UNITER path")
    parser.add_argument("--reference-inputs", type=Path)
    parser.add_argument("--reference-outputs", type=Path)
    parser.add_argument("--atol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    model = convert(args.checkpoint_path, args.original_config,
                    prepend_global_region=not args.inputs_include_global_region, switching=args.switching)
    if args.reference_inputs and args.reference_outputs:
        if args.switching:
            parser.error("--reference-outputs checks the plain path: leave out --switching")
        diffs = compare_with_reference(hf_outputs(model, load_file(args.reference_inputs)),
                                       load_file(args.reference_outputs), model.config.prepend_global_region)
        for name, diff in sorted(diffs.items()):
            print(f"{name:28s} max |diff| {diff:.2e}")
        if max(diffs.values()) > args.atol:
            print(f"FAILED: max |diff| {max(diffs.values()):.2e} > {args.atol}", file=sys.stderr)
            return 1
    model.save_pretrained(args.output_dir)
    print(f"saved {type(model).__name__} to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
