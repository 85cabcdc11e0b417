"""Convert original InterBERT checkpoints (https://github.com/black4321/InterBERT, bare `state_dict` `.bin` files) to
hf_vl InterBERT.

The original scripts save `torch.save(model.state_dict())` of `InterBertForMultiModalPreTraining` (pre-training) or
`InterBertForVLTasks` (fine-tuning; EMA files `*_ema.bin` have the same keys). Every head present becomes its own
HF folder:

| original keys                                          | HF class                              | folder            |
|--------------------------------------------------------|---------------------------------------|-------------------|
| `cls.predictions`, `cls.imagePredictions`, `cls.bi_seq_relationship` | `InterBertForPreTraining` | `pretraining`     |
| `vil_prediction`                                       | `InterBertForQuestionAnswering`       | `vqa`             |
| `vil_logit`                                            | `InterBertForImageAndTextRetrieval`   | `retrieval`       |
| `vil_logit`                                            | `InterBertForMultipleChoice`          | `multiple_choice` |

Fix-ups (named, small):
- `encoder.layer.{i}` splits into the interaction module (`i < num_hidden_layers`) and the text extractor;
- `cls.predictions.decoder.weight` is the tied word embedding matrix (checked equal, then dropped: the HF model ties);
- `cls.bi_seq_relationship` rows are swapped: the original's ITM index 0 means "match" (ViLBERT's
  `next_sentence_label == 0`), hf_vl's index 1 does (METER, VLMo);
- `vision_logit` (region scores) and `linguisic_logit` (token scores) have no hf_vl head yet; they are returned
  as extras and reported, not silently lost.

The original data loaders put the global image feature into row 0 of the region features; hf_vl's InterBERT
prepends it itself (`prepend_global_region=True`, the default of the converted config). Pass
`--inputs-include-global-region` to convert for inputs that already carry it.

Usage:

    python conversion/convert_interbert_original_to_hf.py --checkpoint-path pytorch_model_19.bin \\
        --original-config config/bert_base_6layer_interbert.json --output-dir converted/interbert

    # checked against outputs recorded with the original code:
    python conversion/convert_interbert_original_to_hf.py --checkpoint-path tests/fixtures/interbert/pytorch_model.bin \\
        --original-config tests/fixtures/interbert/original_config.json --output-dir /tmp/interbert \\
        --reference-inputs tests/fixtures/interbert/inputs.safetensors \\
        --reference-outputs tests/fixtures/interbert/outputs.safetensors

`load_original_checkpoint`, `config_from_original`, `convert_state_dict`, `load_converted_model` and
`compare_with_reference` are the reusable part (the tests import this file by path).
"""

import argparse
import json
import re
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from hf_vl.models.interbert.configuration_interbert import InterBertConfig
from hf_vl.models.interbert.modeling_interbert import (
    InterBertForImageAndTextRetrieval,
    InterBertForMultipleChoice,
    InterBertForPreTraining,
    InterBertForQuestionAnswering,
)

#: folder -> (HF class, original key prefix that must be present)
HEAD_FOLDERS = {
    "pretraining": (InterBertForPreTraining, "cls.bi_seq_relationship."),
    "vqa": (InterBertForQuestionAnswering, "vil_prediction."),
    "retrieval": (InterBertForImageAndTextRetrieval, "vil_logit."),
    "multiple_choice": (InterBertForMultipleChoice, "vil_logit."),
}

# Base model renames (applied after the `bert.` -> `interbert.` prefix swap), timm-style regex table.
_BASE_RENAMES = [
    (r"^v_embeddings\.image_embeddings\.", "region_embeddings.feature_embeddings."),
    (r"^v_embeddings\.image_location_embeddings\.", "region_embeddings.location_embeddings."),
    (r"^v_embeddings\.LayerNorm\.", "region_embeddings.LayerNorm."),
    (r"^encoder\.v_layer\.(\d+)\.", r"image_extraction_layers.\1."),
    (r"^t_pooler\.", "text_pooler."),
    (r"^v_pooler\.", "image_pooler."),
]
# Head renames per HF class.
_HEAD_RENAMES = {
    InterBertForPreTraining: [
        (r"^cls\.predictions\.transform\.", "msm_head.transform."),
        (r"^cls\.predictions\.bias$", "msm_head.bias"),
        (r"^cls\.imagePredictions\.", "mrm_head."),
        (r"^cls\.bi_seq_relationship\.", "itm_head."),
    ],
    InterBertForQuestionAnswering: [(r"^vil_prediction\.", "classifier.")],
    InterBertForImageAndTextRetrieval: [(r"^vil_logit\.", "rank_output.")],
    InterBertForMultipleChoice: [(r"^vil_logit\.", "classifier.")],
}
_EXTRA_PREFIXES = ("vision_logit.", "linguisic_logit.")
_TIED_DECODER = "cls.predictions.decoder.weight"
#: names of the pre-training heads' outputs in `InterBertForVLTasks` (the fine-tuning model returns them too)
TASKS_OUTPUT_NAMES = {
    "prediction_scores_t": "linguisic_prediction",
    "prediction_scores_v": "vision_prediction",
    "seq_relationship_score": "vil_binary_prediction",
}


class ConversionError(ValueError):
    """The checkpoint or config cannot be converted (missing/unknown keys, shapes, unsupported options)."""


def load_original_checkpoint(path) -> dict[str, torch.Tensor]:
    """The original bare state dict, read with `torch.load(weights_only=True)` (no arbitrary unpickling)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise ConversionError(f"{path}: expected a non-empty state dict, got {type(state).__name__}.")
    state = {key[len("module."):] if key.startswith("module.") else key: value for key, value in state.items()}
    if not any(key.startswith("bert.") for key in state):
        raise ConversionError(f"{path}: no `bert.*` keys; is this an InterBERT checkpoint? Keys: {sorted(state)[:5]}")
    return state


def _original_config_dict(config) -> dict:
    """The original config (a `bert_base_6layer_interbert.json` dict, or the fixture's wrapper holding one)."""
    if isinstance(config, (str, Path)):
        config = json.loads(Path(config).read_text())
    if "vocab_size" in config:
        return config
    for value in config.values():  # fixture wrapper: the filled-in config is nested
        if isinstance(value, dict) and "vocab_size" in value and "t_num_hidden_layers" in value:
            return value
    raise ConversionError("the original config holds no `vocab_size`: pass config/bert_base_6layer_interbert.json.")


def config_from_original(original_config, state_dict, prepend_global_region: bool = True, **overrides) -> InterBertConfig:
    """`InterBertConfig` from the original config dict (sizes cross-checked against the tensors)."""
    original = _original_config_dict(original_config)
    if original.get("v_hidden_size", original["hidden_size"]) != original["hidden_size"]:
        raise ConversionError(
            f"v_hidden_size ({original['v_hidden_size']}) != hidden_size ({original['hidden_size']}): the interaction "
            "module runs the regions through the text layers, so the original code needs them equal."
        )
    for name in ("fusion_method", "pooling_method"):
        if original.get(name, "mul") not in ("mul", "sum"):
            raise ConversionError(f"`{name}`={original[name]!r} is not supported (only 'mul' and 'sum').")
    layer_ids = {int(m.group(1)) for key in state_dict if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", key))}
    num_interaction = original["num_hidden_layers"]
    num_text = original.get("t_num_hidden_layers", len(layer_ids) - num_interaction)
    if len(layer_ids) != num_interaction + num_text:
        raise ConversionError(
            f"the checkpoint has {len(layer_ids)} text layers, the config says num_hidden_layers + t_num_hidden_layers "
            f"= {num_interaction + num_text}."
        )
    kwargs = dict(
        vocab_size=original["vocab_size"], hidden_size=original["hidden_size"],
        num_attention_heads=original["num_attention_heads"], intermediate_size=original["intermediate_size"],
        hidden_act=original.get("hidden_act", "gelu"), hidden_dropout_prob=original.get("hidden_dropout_prob", 0.1),
        attention_probs_dropout_prob=original.get("attention_probs_dropout_prob", 0.1),
        max_position_embeddings=original["max_position_embeddings"], type_vocab_size=original["type_vocab_size"],
        initializer_range=original.get("initializer_range", 0.02), layer_norm_eps=1e-12, pad_token_id=0,
        num_interaction_layers=num_interaction, num_text_extraction_layers=num_text,
        num_image_extraction_layers=original["v_num_hidden_layers"],
        image_num_attention_heads=original["v_num_attention_heads"],
        image_intermediate_size=original["v_intermediate_size"], image_hidden_act=original.get("v_hidden_act", "gelu"),
        image_hidden_dropout_prob=original.get("v_hidden_dropout_prob", 0.1),
        image_attention_probs_dropout_prob=original.get("v_attention_probs_dropout_prob", 0.1),
        visual_feat_dim=original["v_feature_size"],
        visual_pos_dim=state_dict["bert.v_embeddings.image_location_embeddings.weight"].shape[1],
        num_region_classes=original["v_target_size"], pooler_size=original.get("bi_hidden_size", 1024),
        pooler_act="relu", fusion_method=original.get("fusion_method", "mul"),
        prepend_global_region=prepend_global_region,
    )
    if "vil_prediction.weight" in state_dict:
        kwargs["num_labels"] = state_dict["vil_prediction.weight"].shape[0]
    kwargs.update(overrides)
    return InterBertConfig(**kwargs)


def _rename(key: str, table) -> str | None:
    for pattern, replacement in table:
        new_key, count = re.subn(pattern, replacement, key)
        if count:
            return new_key
    return None


def _base_key(key: str, config: InterBertConfig) -> str:
    """`bert.*` key -> `interbert.*` key."""
    inner = key[len("bert."):]
    match = re.match(r"encoder\.layer\.(\d+)\.(.*)", inner)
    if match:
        index, rest = int(match.group(1)), match.group(2)
        if index < config.num_interaction_layers:
            return f"interbert.interaction_layers.{index}.{rest}"
        return f"interbert.text_extraction_layers.{index - config.num_interaction_layers}.{rest}"
    return "interbert." + (_rename(inner, _BASE_RENAMES) or inner)


def convert_state_dict(state_dict, config: InterBertConfig) -> tuple[dict[type, dict], dict[str, torch.Tensor]]:
    """Renames the original keys. Returns `({HF class: its state dict}, extras)` for every head class whose original
    head is present; `extras` holds the original weights no hf_vl head reads (`vision_logit`, `linguisic_logit`)."""
    base, heads, extras = {}, {cls: {} for cls in _HEAD_RENAMES}, {}
    for key, tensor in state_dict.items():
        if key.startswith("bert."):
            base[_base_key(key, config)] = tensor
        elif key == _TIED_DECODER:
            word = state_dict["bert.embeddings.word_embeddings.weight"]
            if not torch.equal(tensor, word):
                raise ConversionError(f"`{key}` differs from the word embeddings; InterBERT ties them.")
        elif key.startswith(_EXTRA_PREFIXES):
            extras[key] = tensor
        else:
            targets = [(cls, new) for cls, table in _HEAD_RENAMES.items() if (new := _rename(key, table))]
            if not targets:
                raise ConversionError(f"unknown original key `{key}`")
            for cls, new_key in targets:
                if new_key.startswith("itm_head."):  # original index 0 = match -> hf_vl index 1 = match
                    tensor = tensor.flip(0)
                heads[cls][new_key] = tensor
    converted = {}
    for folder, (cls, marker) in HEAD_FOLDERS.items():
        if any(key.startswith(marker) for key in state_dict):
            converted[cls] = {**base, **heads[cls]}
    return converted, extras


def load_converted_model(model_class, state_dict, config: InterBertConfig):
    """Builds `model_class(config)` and loads `state_dict` strictly (only the tied decoder is not in it)."""
    model = model_class(config)
    result = model.load_state_dict(state_dict, strict=False)
    missing = [key for key in result.missing_keys if key != "msm_head.decoder.weight"]
    if missing or result.unexpected_keys:
        raise ConversionError(
            f"{model_class.__name__}: missing {missing[:8]}, unexpected {result.unexpected_keys[:8]}"
        )
    model.tie_weights()
    return model.eval()


def reference_inputs(inputs: dict[str, torch.Tensor], config: InterBertConfig) -> dict[str, torch.Tensor]:
    """hf_vl forward kwargs from the fixture's original inputs; drops row 0 (the global region) when the converted
    model prepends it itself."""
    region_rows = slice(1, None) if config.prepend_global_region else slice(None)
    return {
        "input_ids": inputs["input_txt"],
        "attention_mask": inputs["attention_mask"],
        "token_type_ids": inputs["token_type_ids"],
        "visual_feats": inputs["input_imgs"][:, region_rows],
        "visual_pos": inputs["image_loc"][:, region_rows],
        "visual_attention_mask": inputs["image_attention_mask"][:, region_rows],
    }


@torch.no_grad()
def hf_outputs(models: dict[type, torch.nn.Module], extras, inputs, config, prefix: str = "") -> dict[str, torch.Tensor]:
    """The hf_vl counterparts of the original outputs (names of `outputs.safetensors`)."""
    kwargs = reference_inputs(inputs, config)
    results = {}
    if InterBertForPreTraining in models:
        model = models[InterBertForPreTraining]
        out = model(**kwargs)
        base = model.interbert(**kwargs)
        image_features = base.image_features  # (B, N incl. global, H)
        results.update({
            f"{prefix}bert.sequence_output_t": base.text_features,
            f"{prefix}bert.sequence_output_v": image_features,
            f"{prefix}bert.pooled_output_t": base.text_pooler_output,
            f"{prefix}bert.pooled_output_v": base.image_pooler_output,
            f"{prefix}pooled_output": base.pooler_output,
            f"{prefix}prediction_scores_t": out.msm_logits,
            # the original scores every row, the global one included
            f"{prefix}prediction_scores_v": model.mrm_head(image_features),
            f"{prefix}seq_relationship_score": out.itm_logits.flip(-1),  # back to the original's index 0 = match
        })
        if extras:
            _, _, image_mask = model.interbert.region_inputs(
                kwargs["visual_feats"], kwargs["visual_pos"], kwargs["visual_attention_mask"]
            )
            image_mask = image_mask.to(image_features.dtype)  # (B, N incl. global)
            vision_logit = torch.nn.functional.linear(image_features, extras["vision_logit.weight"],
                                                      extras["vision_logit.bias"])
            results[f"{prefix}vision_logit"] = vision_logit + ((1.0 - image_mask) * -10000.0).unsqueeze(2)
            results[f"{prefix}linguisic_logit"] = torch.nn.functional.linear(
                base.text_features, extras["linguisic_logit.weight"], extras["linguisic_logit.bias"]
            )
    if InterBertForQuestionAnswering in models:
        results[f"{prefix}vil_prediction"] = models[InterBertForQuestionAnswering](**kwargs).logits
    if InterBertForImageAndTextRetrieval in models:
        results[f"{prefix}vil_logit"] = models[InterBertForImageAndTextRetrieval](**kwargs).logits
    return results


def compare_with_reference(actual: dict, reference: dict, name_map: dict[str, str]) -> dict[str, float]:
    """Max abs difference per reference output (`name_map`: hf name -> reference name). Padded rows of
    `vision_logit` (about -10000) are compared relative to their size."""
    diffs = {}
    for name, ref_name in name_map.items():
        expected, got = reference[ref_name], actual[name]
        if expected.shape != got.shape:
            raise ConversionError(f"{ref_name}: shape {tuple(got.shape)} != reference {tuple(expected.shape)}")
        scale = expected.abs().clamp(min=1.0) if "vision_logit" in ref_name else 1.0
        diffs[ref_name] = float(((expected - got).abs() / scale).max())
    return diffs


def convert(checkpoint_path, original_config, output_dir=None, prepend_global_region=True, id2label=None):
    """Converts one original checkpoint; returns `({folder: model}, extras)` and saves each folder when
    `output_dir` is given."""
    state_dict = load_original_checkpoint(checkpoint_path)
    overrides = {"id2label": id2label} if id2label else {}
    config = config_from_original(original_config, state_dict, prepend_global_region, **overrides)
    converted, extras = convert_state_dict(state_dict, config)
    models = {}
    for folder, (cls, _) in HEAD_FOLDERS.items():
        if cls in converted:
            models[folder] = load_converted_model(cls, converted[cls], config)
            if output_dir is not None:
                models[folder].save_pretrained(Path(output_dir) / folder)
    return models, extras


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint-path", required=True)
    parser.add_argument("--original-config", required=True, help="config/bert_base_6layer_interbert.json")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--inputs-include-global-region", action="store_true",
                        help="inputs carry the global region in row 0 (prepend_global_region=False)")
    parser.add_argument("--answer-vocab", help="json list of the VQA answers (id2label of the VQA head)")
    parser.add_argument("--reference-inputs")
    parser.add_argument("--reference-outputs")
    parser.add_argument("--atol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    id2label = None
    if args.answer_vocab:
        id2label = dict(enumerate(json.loads(Path(args.answer_vocab).read_text())))
    models, extras = convert(args.checkpoint_path, args.original_config, args.output_dir,
                             not args.inputs_include_global_region, id2label)
    print(f"converted: {', '.join(f'{folder} ({type(m).__name__})' for folder, m in models.items())}")
    if extras:
        print(f"not converted (no hf_vl head reads them): {sorted(extras)}")
    if args.reference_inputs and args.reference_outputs:
        inputs, reference = load_file(args.reference_inputs), load_file(args.reference_outputs)
        config = next(iter(models.values())).config
        by_class = {type(model): model for model in models.values()}
        prefix = "" if "vqa" in models else "pretraining."
        actual = hf_outputs(by_class, extras, inputs, config, prefix)
        names = {name: TASKS_OUTPUT_NAMES.get(name, name) if not prefix else name for name in actual}
        diffs = compare_with_reference(actual, reference, {k: v for k, v in names.items() if v in reference})
        for name, diff in sorted(diffs.items()):
            print(f"{name}: max abs diff {diff:.3g}")
        if max(diffs.values()) > args.atol:
            sys.exit(f"max difference {max(diffs.values()):.3g} > {args.atol}")


if __name__ == "__main__":
    main()
