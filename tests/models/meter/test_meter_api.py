"""METER second pass: vision towers with other prefix-token counts, precomputed tower outputs (encode once),
`torch.compile`, v5 kwargs handling, missing-weight init, `resize_token_embeddings`, bf16."""

import copy
import tempfile

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_vl import (
    MeterConfig,
    MeterForImageAndTextRetrieval,
    MeterForImagesAndTextClassification,
    MeterForPreTraining,
    MeterForQuestionAnswering,
    MeterModel,
)
from test_modeling_meter import TINY_BERT, TINY_CLIP, TINY_SWIN, MeterModelTester

TOWER = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37, image_size=32,
             patch_size=8)
TINY_TOWERS = {
    # name: (vision_config, prefix tokens, pooling, pixels per image token)
    "clip": (TINY_CLIP, 1, "cls", 8),
    "vit": (dict(TOWER, model_type="vit"), 1, "cls", 8),
    "deit": (dict(TOWER, model_type="deit"), 2, "cls", 8),
    "siglip": (dict(TOWER, model_type="siglip_vision_model", vision_use_head=False), 0, "mean", 8),
    "swin": (TINY_SWIN, 0, "mean", 16),
    "resnet": (dict(model_type="resnet", embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic"),
               0, "mean", 8),
}


def tiny_config(vision_config=TINY_CLIP, **kwargs):
    fields = dict(hidden_size=32, num_attention_heads=4, intermediate_size=37, num_fusion_layers=1,
                  modality_type_vocab_size=3, num_labels=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    fields.update(kwargs)
    return MeterConfig(text_config=copy.deepcopy(TINY_BERT), vision_config=copy.deepcopy(vision_config), **fields)


def text_inputs(batch=2, length=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, 99, (batch, length), generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


# ------------------------------------------------------------------------------------------- prefix-token counts


@pytest.mark.parametrize("tower", sorted(TINY_TOWERS))
def test_vision_towers_prefix_tokens_pixel_mask_pooling_and_mim(tower):
    vision_config, prefix, pooling, stride = TINY_TOWERS[tower]
    config = tiny_config(vision_config)
    assert config.image_pooling == pooling
    model = MeterForPreTraining(config).eval()
    assert model.meter.num_image_prefix_tokens == prefix
    assert model.image_token_stride() == stride
    pixel_values = torch.randn(2, 3, 32, 32)
    num_patches = (32 // stride) ** 2
    pixel_mask = torch.ones(2, 32, 32, dtype=torch.long)
    pixel_mask[0, :, 16:] = 0  # right half of image 0 is padding
    with torch.no_grad():
        out = model.meter(**text_inputs(), pixel_values=pixel_values, pixel_mask=pixel_mask)
        mask = model.meter._image_token_mask(pixel_mask, out.image_features)
    assert out.image_features.shape[1] == prefix + num_patches
    assert mask[:, :prefix].eq(1).all()  # prefix tokens are never masked
    assert mask[0, prefix:].sum() == num_patches // 2 and mask[1].sum() == prefix + num_patches

    # image summary: the [CLS] token where the tower has one, else the mean over unmasked tokens
    with torch.no_grad():
        tokens = out.image_features
        weights = mask.unsqueeze(-1).float()
        summary = tokens[:, 0] if pooling == "cls" else (tokens * weights).sum(1) / weights.sum(1)
        expected = model.meter.cross_modal_image_pooler(summary)
    torch.testing.assert_close(out.pooler_output[:, 32:], expected)

    # masked patch classification predicts exactly the masked patches (no prefix token is taken for a patch)
    bool_masked_pos = torch.zeros(2, num_patches, dtype=torch.bool)
    bool_masked_pos[0, -1] = bool_masked_pos[1, 0] = True
    captured = {}
    hook = model.mim_score.register_forward_hook(lambda m, i, o: captured.update(input=i[0]))
    with torch.no_grad():
        pre = model(**text_inputs(), pixel_values=pixel_values, bool_masked_pos=bool_masked_pos)
    hook.remove()
    features = pre.image_features if hasattr(pre, "image_features") else None
    assert features is None and pre.mim_logits.shape == (2, 2)
    with torch.no_grad():
        masked_pixels, _ = model._mask_patches(pixel_values, bool_masked_pos, stride)
        fused = model.meter(**text_inputs(), pixel_values=masked_pixels).image_features
    torch.testing.assert_close(captured["input"], torch.stack([fused[0, -1], fused[1, prefix]]))


@pytest.mark.parametrize("tower", ["clip", "vit", "deit", "siglip"])
def test_interpolate_pos_encoding_reaches_every_tower_with_absolute_positions(tower):
    vision_config, prefix, _, _ = TINY_TOWERS[tower]
    model = MeterForQuestionAnswering(tiny_config(vision_config)).eval()
    big = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        out = model(**text_inputs(), pixel_values=big, interpolate_pos_encoding=True, output_hidden_states=True)
        automatic = model(**text_inputs(), pixel_values=big)
    assert out.image_hidden_states[-1].shape[1] == prefix + 36
    torch.testing.assert_close(out.logits, automatic.logits)
    with pytest.raises(Exception):  # without interpolation the 32 px position table cannot take 48 px
        model(**text_inputs(), pixel_values=big, interpolate_pos_encoding=False)
    model.meter.resize_vision_position_embeddings(48)
    with torch.no_grad():
        resized = model(**text_inputs(), pixel_values=big, interpolate_pos_encoding=False)
    assert torch.isfinite(resized.logits).all()


def test_unsupported_vision_tower_is_refused_by_name():
    config = tiny_config(dict(model_type="mobilevit", image_size=32, hidden_sizes=[16, 24, 32]))
    with pytest.raises(ValueError, match="mobilevit.*supported"):
        MeterModel(config)


# ------------------------------------------------------------------------------------------- encode once


def _count_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda m, i, o: calls.append(1))
    return calls, handle


def test_precomputed_tower_outputs_match_the_full_forward():
    model = MeterForQuestionAnswering(tiny_config()).eval()
    text, pixel_values = text_inputs(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = model(**text, pixel_values=pixel_values).logits
        image_embeds = model.meter.get_image_encoder_hidden_states(pixel_values)
        text_embeds = model.meter.get_text_encoder_hidden_states(**text)
        from_image = model(**text, image_embeds=image_embeds).logits
        from_both = model(attention_mask=text["attention_mask"], text_embeds=text_embeds, image_embeds=image_embeds).logits
    torch.testing.assert_close(from_image, full)
    torch.testing.assert_close(from_both, full)
    with pytest.raises(ValueError, match="either `pixel_values` or `image_embeds`"):
        model(**text, pixel_values=pixel_values, image_embeds=image_embeds)
    with pytest.raises(ValueError, match=r"`image_embeds` must be \(batch_size, image_length, 32\)"):
        model(**text, image_embeds=image_embeds[..., :5])


def test_nlvr2_encodes_the_text_once_and_both_images_in_one_pass():
    model = MeterForImagesAndTextClassification(tiny_config(num_labels=2)).eval()
    text_calls, h1 = _count_calls(model.meter.text_model)
    vision_calls, h2 = _count_calls(model.meter.vision_model)
    pixel_values = torch.randn(2, 2, 3, 32, 32)
    with torch.no_grad():
        out = model(**text_inputs(), pixel_values=pixel_values)
    h1.remove(), h2.remove()
    assert len(text_calls) == 1 and len(vision_calls) == 1
    with torch.no_grad():  # same as fusing each image separately
        first = model.meter(**text_inputs(), pixel_values=pixel_values[:, 0], image_token_type_idx=1).pooler_output
        second = model.meter(**text_inputs(), pixel_values=pixel_values[:, 1], image_token_type_idx=2).pooler_output
    torch.testing.assert_close(out.pooler_output, torch.cat([first, second], -1))


def test_ranking_retrieval_encodes_each_image_once():
    model = MeterForImageAndTextRetrieval(tiny_config()).eval()
    vision_calls, handle = _count_calls(model.meter.vision_model)
    candidates = torch.randint(3, 99, (2, 5, 6))
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ranked = model(input_ids=candidates, pixel_values=pixel_values, labels=torch.tensor([0, 3]))
    handle.remove()
    assert len(vision_calls) == 1 and ranked.logits.shape == (2, 5)
    with torch.no_grad():
        pair = model(input_ids=candidates[:, 3], pixel_values=pixel_values).logits[:, 0]
    torch.testing.assert_close(ranked.logits[:, 3], pair)


def test_from_text_vision_pretrained_builds_each_tower_once(monkeypatch, tmp_path):
    from transformers import AutoModel, BertModel, CLIPVisionModel

    BertModel(BertModel.config_class(**{k: v for k, v in TINY_BERT.items() if k != "model_type"})).save_pretrained(
        tmp_path / "text")
    CLIPVisionModel(CLIPVisionModel.config_class(**{k: v for k, v in TINY_CLIP.items() if k != "model_type"})
                    ).save_pretrained(tmp_path / "vision")
    built = []
    original = AutoModel.from_config.__func__

    def counting_from_config(cls, config, **kwargs):
        built.append(config.model_type)
        return original(cls, config, **kwargs)

    monkeypatch.setattr(AutoModel, "from_config", classmethod(counting_from_config))
    model = MeterForQuestionAnswering.from_text_vision_pretrained(
        str(tmp_path / "text"), str(tmp_path / "vision"), hidden_size=32, num_attention_heads=4,
        intermediate_size=37, num_fusion_layers=1, num_labels=3,
    )
    assert built == []  # the towers come from from_pretrained only, never built a second time from the config
    loaded = AutoModel.from_pretrained(tmp_path / "vision")
    torch.testing.assert_close(
        model.meter.vision_model.get_input_embeddings().weight, loaded.get_input_embeddings().weight
    )
    # already-loaded towers are used as they are
    text_tower = BertModel.from_pretrained(tmp_path / "text", add_pooling_layer=False)
    again = MeterModel.from_text_vision_pretrained(text_tower, loaded, hidden_size=32, num_attention_heads=4,
                                                   intermediate_size=37, num_fusion_layers=1)
    assert again.text_model is text_tower and again.vision_model is loaded


# ------------------------------------------------------------------------------------------- v5 conventions


def test_unknown_keyword_arguments_are_rejected_by_name():
    model = MeterForQuestionAnswering(tiny_config()).eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    with pytest.raises(TypeError, match="pixel_valuez.*did you mean 'pixel_values'"):
        model(**text_inputs(), pixel_valuez=pixel_values)
    with pytest.raises(TypeError, match="'label'.*did you mean 'labels'"):
        model(**text_inputs(), pixel_values=pixel_values, label=torch.zeros(2, 4))
    with pytest.raises(TypeError, match="MeterModel.forward"):
        model.meter(**text_inputs(), pixel_values=pixel_values, bogus=1)


def test_return_dict_false_gives_a_tuple_from_every_head():
    model = MeterForQuestionAnswering(tiny_config()).eval()
    with torch.no_grad():
        as_tuple = model(**text_inputs(), pixel_values=torch.randn(2, 3, 32, 32), return_dict=False)
        as_dict = model(**text_inputs(), pixel_values=torch.randn(2, 3, 32, 32))
    assert isinstance(as_tuple, tuple) and as_tuple[0].shape == as_dict.logits.shape


def test_torch_compile_fullgraph_forward_matches_eager():
    torch._dynamo.reset()
    model = MeterForQuestionAnswering(tiny_config()).eval()
    inputs = {**text_inputs(), "pixel_values": torch.randn(2, 3, 32, 32)}
    inputs["attention_mask"][1, -2:] = 0
    with torch.no_grad():
        eager = model(**inputs).logits
        # fullgraph=True fails on any graph break (e.g. a host sync reading tensor values); aot_eager traces the whole
        # graph like the default backend but skips inductor's C++ code generation (minutes on a 2-core CPU)
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        out = compiled(**inputs).logits
    torch.testing.assert_close(out, eager)


def test_missing_weights_get_the_init_of_a_fresh_model(tmp_path):
    config = tiny_config()
    config.vision_config.hidden_size = 64  # CLIP's scaled init (std ~ hidden^-0.5) then differs clearly from 0.02
    config.vision_config.intermediate_size = 64
    fresh = MeterModel(config)
    fresh.save_pretrained(tmp_path)
    dropped = [
        "vision_model.encoder.layers.0.self_attn.q_proj.weight",
        "vision_model.encoder.layers.0.mlp.fc1.weight",
        "cross_modal_text_layers.0.attention.self.query.weight",
    ]
    state = load_file(tmp_path / "model.safetensors")
    for key in dropped:
        state.pop(key)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    reloaded = MeterModel.from_pretrained(tmp_path)
    for key in dropped:
        expected, got = fresh.state_dict()[key].std().item(), reloaded.state_dict()[key].std().item()
        assert got == pytest.approx(expected, rel=0.15), key
    kept = "vision_model.encoder.layers.0.self_attn.k_proj.weight"
    torch.testing.assert_close(reloaded.state_dict()[kept], fresh.state_dict()[kept])


def test_resize_token_embeddings_resizes_the_mlm_decoder_and_bias():
    model = MeterForPreTraining(tiny_config())
    model.resize_token_embeddings(120)
    assert model.get_input_embeddings().weight.shape[0] == 120
    assert model.get_output_embeddings().weight.shape[0] == 120 and model.mlm_score.bias.shape == (120,)
    assert model.config.text_config.vocab_size == 120
    inputs = text_inputs()
    inputs["input_ids"][:, 2] = 110  # a new token id
    mlm_labels = torch.full_like(inputs["input_ids"], -100)
    mlm_labels[:, 2] = 115
    out = model(**inputs, pixel_values=torch.randn(2, 3, 32, 32), mlm_labels=mlm_labels)
    assert out.mlm_logits.shape[-1] == 120 and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.mlm_score.bias.grad[115] != 0


def test_bf16_autocast_with_padding_is_finite_and_close_to_fp32():
    tester = MeterModelTester(None)
    config, inputs = tester.prepare_config_and_inputs_for_common()
    model = MeterForQuestionAnswering(config).eval()
    pixel_mask = torch.ones(3, 32, 32, dtype=torch.long)
    pixel_mask[0, :, 24:] = 0  # a padded image
    with torch.no_grad():
        reference = model(**inputs, pixel_mask=pixel_mask, output_hidden_states=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(**inputs, pixel_mask=pixel_mask, output_hidden_states=True)
    for hidden in low.hidden_states:
        assert torch.isfinite(hidden.float()).all()
    assert torch.isfinite(low.logits.float()).all()
    torch.testing.assert_close(low.logits.float(), reference.logits, atol=0.1, rtol=0.05)
    model_bf16 = MeterForQuestionAnswering(config).eval().to(torch.bfloat16)
    model_bf16.load_state_dict({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()})
    with torch.no_grad():
        pure = model_bf16(**{**inputs, "pixel_values": inputs["pixel_values"].bfloat16()}, pixel_mask=pixel_mask)
    assert torch.isfinite(pure.logits.float()).all()
    torch.testing.assert_close(pure.logits.float(), reference.logits, atol=0.15, rtol=0.05)
