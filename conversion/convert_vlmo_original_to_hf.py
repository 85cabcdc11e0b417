"""Convert original VLMo checkpoints (microsoft/unilm `vlmo/`, MIT) to hf_vl's VLMo classes.

Reads the released `.pt` files: a bare state dict, or one wrapped under "state_dict", "module" or "model" (a
DeepSpeed "module." prefix is stripped), loaded with `torch.load(weights_only=True)`.

What the conversion does (the timm `checkpoint_filter_fn` shape: a rename table, small named fix-ups, strict load):
- drops the stored relative-position index tensors (`relative_position_index`, `text_relative_position_index`,
  `text_imag_relative_position_index`, `text_embeddings.position_ids`) after checking that they equal the indices
  hf_vl recomputes from the config (the fusion index is stored as float32 by the original code);
- keeps the fused `attn.qkv.weight` with its `q_bias` / `v_bias` (k has no bias) as they are;
- drops the text position table (`text_embeddings.position_embeddings.weight`) when the checkpoint uses relative
  position bias: the original builds `BertEmbeddings(position_embedding_type="rel_pos")`, which never adds it;
- infers base / large / base-plus sizes (and image size, text lengths, vocabulary, modality rows) from the keys and
  shapes, and which heads are present (`itc_*` / `itm_score` / `mlm_score` -> pre-training, `vqa_classifier`,
  `nlvr2_classifier`, `mlm_score` alone -> text MLM, `itc_*` alone -> retrieval);
- loads strictly into the requested class: every parameter of the class must come from the checkpoint;
- optionally resizes the relative position table for another image size (`--image_size`, bicubic with aligned
  corners in PyTorch; the original used SciPy's `interp2d`, which SciPy removed).

Usage::

    python conversion/convert_vlmo_original_to_hf.py --checkpoint vlmo_base_patch16_224.pt --output_dir out \
        --head pretraining      # or vqa, nlvr2, retrieval, mlm, base, auto (the richest head present)
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from hf_vl.models.vlmo import (
    VlmoConfig,
    VlmoForImageAndTextRetrieval,
    VlmoForImagesAndTextClassification,
    VlmoForMaskedLM,
    VlmoForPreTraining,
    VlmoForQuestionAnswering,
    VlmoModel,
)
from hf_vl.models.vlmo.modeling_vlmo import (
    fusion_relative_position_index,
    image_relative_position_index,
    text_relative_position_index,
)


HEADS = {
    "base": VlmoModel,
    "pretraining": VlmoForPreTraining,
    "vqa": VlmoForQuestionAnswering,
    "nlvr2": VlmoForImagesAndTextClassification,
    "retrieval": VlmoForImageAndTextRetrieval,
    "mlm": VlmoForMaskedLM,
}

# original key (regex) -> hf_vl key inside the base model `vlmo.`
BACKBONE_RENAMES = [
    (r"^relative_position_bias_table$", "relative_position_bias_table"),
    (r"^logit_scale$", "logit_scale"),
    (r"^transformer\.cls_token$", "image_embeddings.cls_token"),
    (r"^transformer\.pos_embed$", "image_embeddings.position_embeddings"),
    (r"^transformer\.patch_embed\.proj\.", "image_embeddings.patch_embeddings."),
    (r"^transformer\.blocks\.(\d+)\.norm1\.", r"layers.\1.layernorm_before."),
    (r"^transformer\.blocks\.(\d+)\.attn\.", r"layers.\1.attention."),
    (r"^transformer\.blocks\.(\d+)\.norm2_text\.", r"layers.\1.text_expert.layernorm."),
    (r"^transformer\.blocks\.(\d+)\.norm2_imag\.", r"layers.\1.image_expert.layernorm."),
    (r"^transformer\.blocks\.(\d+)\.norm2_vl\.", r"layers.\1.vl_expert.layernorm."),
    (r"^transformer\.blocks\.(\d+)\.mlp_text\.", r"layers.\1.text_expert."),
    (r"^transformer\.blocks\.(\d+)\.mlp_imag\.", r"layers.\1.image_expert."),
    (r"^transformer\.blocks\.(\d+)\.mlp_vl\.", r"layers.\1.vl_expert."),
    (r"^transformer\.blocks\.(\d+)\.(gamma_[12])$", r"layers.\1.\2"),
    (r"^transformer\.norm\.", "norm."),
    (r"^text_embeddings\.(word_embeddings|token_type_embeddings|position_embeddings|LayerNorm)\.",
     r"text_embeddings.\1."),
    (r"^token_type_embeddings\.", "token_type_embeddings."),
    (r"^pooler\.dense\.", "pooler.dense."),
    (r"^itc_text_proj\.fc\.", "itc_text_proj."),
    (r"^itc_image_proj\.fc\.", "itc_image_proj."),
]
# original key -> hf_vl key at the head level, per head
HEAD_RENAMES = {
    "pretraining": [(r"^mlm_score\.", "mlm_score."), (r"^itm_score\.fc\.", "itm_score."),
                    (r"^itc_vl_text_proj\.fc\.", "itc_vl_text_proj."),
                    (r"^itc_vl_image_proj\.fc\.", "itc_vl_image_proj."), (r"^logit_vl_scale$", "logit_vl_scale")],
    "vqa": [(r"^vqa_classifier\.", "classifier.")],
    "nlvr2": [(r"^nlvr2_classifier\.", "classifier.")],
    "mlm": [(r"^mlm_score\.", "mlm_score.")],
    "retrieval": [],
    "base": [],
}
INDEX_KEYS = ("relative_position_index", "text_relative_position_index", "text_imag_relative_position_index",
              "text_embeddings.position_ids")


def load_original_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors: bare, or under "state_dict" / "module" / "model"; "module." prefixes stripped."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "module", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
            break
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(checkpoint).__name__}.")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in checkpoint.items()}


def available_heads(state_dict: dict) -> list[str]:
    """hf_vl heads whose weights the checkpoint holds (`base` always)."""
    heads = ["base"]
    if "itc_text_proj.fc.weight" in state_dict:
        heads.append("retrieval")
    if "mlm_score.decoder.weight" in state_dict:
        heads.append("mlm")
    if {"mlm_score.decoder.weight", "itm_score.fc.weight", "itc_vl_text_proj.fc.weight"} <= set(state_dict):
        heads.append("pretraining")
    if "vqa_classifier.0.weight" in state_dict:
        heads.append("vqa")
    if "nlvr2_classifier.0.weight" in state_dict:
        heads.append("nlvr2")
    return heads


def stored_image_size(state_dict: dict) -> int | None:
    """The image size the checkpoint was trained at (from its image index or absolute position table)."""
    patch_size = state_dict["transformer.patch_embed.proj.weight"].shape[-1]
    if "relative_position_index" in state_dict:
        tokens = state_dict["relative_position_index"].shape[0]
    elif "transformer.pos_embed" in state_dict:
        tokens = state_dict["transformer.pos_embed"].shape[1]
    else:
        return None
    return int(round((tokens - 1) ** 0.5)) * patch_size


def config_from_state_dict(state_dict: dict, image_size: int | None = None, head: str = "vqa",
                           **overrides) -> VlmoConfig:
    """A `VlmoConfig` matching the checkpoint's shapes (VLMo-Base / Large / Base-Plus or any custom size);
    `num_labels` comes from the classifier of `head` (VQA answers, or NLVR2's 2 classes)."""
    hidden_size = state_dict["transformer.cls_token"].shape[-1]
    num_layers = 1 + max(int(m.group(1)) for k in state_dict if (m := re.match(r"transformer\.blocks\.(\d+)\.", k)))
    vl_layers = [int(m.group(1)) for k in state_dict if (m := re.match(r"transformer\.blocks\.(\d+)\.mlp_vl\.fc1\.weight", k))]
    patch_size = state_dict["transformer.patch_embed.proj.weight"].shape[-1]
    table = state_dict.get("relative_position_bias_table")
    relative = table is not None
    image_size = image_size or stored_image_size(state_dict)
    if image_size is None:
        raise ValueError("Cannot infer the image size from the checkpoint: pass `image_size`.")
    grid = image_size // patch_size
    if relative:
        num_heads = table.shape[1] // num_layers
        image_rows = (2 * grid - 1) ** 2 + 3
        max_relative_text_length = (table.shape[0] - image_rows - 2) // 2
        if image_rows + 2 * max_relative_text_length + 2 != table.shape[0]:
            raise ValueError(
                f"relative_position_bias_table has {table.shape[0]} rows, which does not fit an image grid of {grid}."
            )
    else:
        num_heads = {768: 12, 1024: 16, 544: 16}.get(hidden_size)
        max_relative_text_length = 196
        if num_heads is None and "num_attention_heads" not in overrides:
            raise ValueError("Without a relative position table the head count is unknown: pass num_attention_heads.")
    text_positions = state_dict.get("text_embeddings.position_embeddings.weight")
    fields = dict(
        vocab_size=state_dict["text_embeddings.word_embeddings.weight"].shape[0],
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=state_dict["transformer.blocks.0.mlp_text.fc1.weight"].shape[0],
        vl_ffn_start_layer=min(vl_layers) if vl_layers else num_layers,
        image_size=image_size,
        patch_size=patch_size,
        num_channels=state_dict["transformer.patch_embed.proj.weight"].shape[1],
        max_text_len=text_positions.shape[0] if text_positions is not None else 40,
        max_relative_text_length=max_relative_text_length,
        use_relative_position_bias=relative,
        use_absolute_position_embeddings="transformer.pos_embed" in state_dict,
        layer_scale_init_value=0.1 if "transformer.blocks.0.gamma_1" in state_dict else None,
        qkv_bias="transformer.blocks.0.attn.q_bias" in state_dict,
        type_vocab_size=state_dict["text_embeddings.token_type_embeddings.weight"].shape[0],
        modality_type_vocab_size=state_dict["token_type_embeddings.weight"].shape[0],
    )
    classifier = {"nlvr2": "nlvr2_classifier.3.weight"}.get(head, "vqa_classifier.3.weight")
    if classifier in state_dict:
        fields["num_labels"] = state_dict[classifier].shape[0]
    fields.update(overrides)
    return VlmoConfig(**fields)


def _check_stored_indices(state_dict: dict, config: VlmoConfig) -> None:
    """The stored index tensors must equal what hf_vl recomputes (else the table would be read differently)."""
    if not config.use_relative_position_bias:
        return
    image_index = image_relative_position_index(config.image_grid_size)
    stored = state_dict.get("text_relative_position_index")
    length = stored.shape[0] if stored is not None else config.max_text_len
    text_index = text_relative_position_index(length, config)
    expected = {
        "relative_position_index": image_index,
        "text_relative_position_index": text_index,
        "text_imag_relative_position_index": fusion_relative_position_index(text_index, image_index, config),
    }
    for key, value in expected.items():
        if key in state_dict and not torch.equal(state_dict[key].long(), value):
            raise ValueError(f"The checkpoint's `{key}` differs from the index recomputed from the config.")


def convert_state_dict(state_dict: dict, config: VlmoConfig, head: str) -> tuple[dict, list[str]]:
    """hf_vl state dict for `head` and the original keys left out (index tensors, other heads' weights)."""
    _check_stored_indices(state_dict, config)
    prefix = "" if head == "base" else "vlmo."
    converted, unused = {}, []
    for key, value in state_dict.items():
        if key in INDEX_KEYS:
            unused.append(key)
            continue
        if key == "text_embeddings.position_embeddings.weight" and config.use_relative_position_bias:
            unused.append(key)  # `rel_pos` BertEmbeddings never adds it
            continue
        new_key = _rename(key, BACKBONE_RENAMES)
        if new_key is not None:
            converted[prefix + new_key] = value
            continue
        new_key = _rename(key, HEAD_RENAMES[head])
        if new_key is None:
            unused.append(key)
        else:
            converted[new_key] = value
    return converted, unused


def _rename(key: str, table) -> str | None:
    for pattern, replacement in table:
        if re.search(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def convert_checkpoint(checkpoint_path, head: str = "auto", image_size: int | None = None, **config_overrides):
    """Builds the hf_vl model for `head` ("auto": the richest head present) from an original checkpoint; every
    parameter and persistent buffer of the class must be in the checkpoint. Returns (model, unused original keys)."""
    state_dict = load_original_state_dict(checkpoint_path)
    heads = available_heads(state_dict)
    if head == "auto":
        head = next(h for h in ("pretraining", "vqa", "nlvr2", "retrieval", "mlm", "base") if h in heads)
    if head not in HEADS:
        raise ValueError(f"`head` must be one of {sorted(HEADS)} or 'auto', got {head!r}.")
    if head not in heads:
        raise ValueError(f"The checkpoint has no weights for head {head!r}; it has {heads}.")
    config = config_from_state_dict(state_dict, image_size=stored_image_size(state_dict) or image_size, head=head,
                                    **config_overrides)
    if head == "nlvr2" and config.modality_type_vocab_size < 3:
        raise ValueError("An NLVR2 checkpoint needs 3 modality rows in `token_type_embeddings`.")
    converted, unused = convert_state_dict(state_dict, config, head)
    model = HEADS[head](config)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ValueError(f"Conversion to {HEADS[head].__name__} failed: missing {missing}, unexpected {unexpected}.")
    if image_size is not None and image_size != config.image_size:  # e.g. 224 pre-training -> 384 fine-tuning
        model.base_model.resize_image_size(image_size)
    return model.eval(), unused


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="original VLMo .pt file")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--head", default="auto", choices=["auto", *HEADS])
    parser.add_argument("--image_size", type=int, default=None,
                        help="resize the relative position table (and absolute positions) to this image size")
    args = parser.parse_args(argv)
    model, unused = convert_checkpoint(args.checkpoint, args.head, args.image_size)
    model.save_pretrained(args.output_dir, safe_serialization=True)
    print(f"saved {type(model).__name__} to {args.output_dir}; original keys not used: {unused}")


if __name__ == "__main__":
    main()
