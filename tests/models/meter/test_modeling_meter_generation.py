"""Encoder-decoder METER (`MeterForConditionalGeneration`): common model checks, generation (greedy with and without
the KV cache, beam search), tied embeddings, the two cross-attentions, the Trainer's gradient accumulation, masked
patch classification with discrete codes."""

import copy
import tempfile
import unittest

import pytest
import torch
from transformers import AutoModel, GenerationConfig

from hf_vl import MeterConfig, MeterForConditionalGeneration, MeterForPreTraining, MeterModel
from hf_vl.data import PatchKMeansTokenizer, discrete_mim_labels
from test_modeling_common import ModelTesterMixin

from test_modeling_meter import TINY_BERT, TINY_ROBERTA, TINY_SWIN, MeterModelTester


class MeterGenerationModelTester(MeterModelTester):
    def __init__(self, parent, tie=True, **kwargs):
        super().__init__(parent, **kwargs)
        self.num_decoder_layers = 2
        self.target_length = 5
        self.tie = tie

    def get_config(self):
        config = super().get_config().to_dict()
        config.update(num_decoder_layers=self.num_decoder_layers, decoder_start_token_id=2, eos_token_id=3,
                      tie_decoder_embeddings=self.tie, max_decoder_position_embeddings=24)  # fmt: skip
        return MeterConfig.from_dict(config)

    def prepare_config_and_inputs_for_common(self):
        config, inputs = super().prepare_config_and_inputs_for_common()
        generator = torch.Generator().manual_seed(1)
        inputs["decoder_input_ids"] = torch.randint(4, self.text_config["vocab_size"], (self.batch_size, self.target_length),
                                                    generator=generator)  # fmt: skip
        return config, inputs

    def prepare_labels(self, model_class, inputs_dict):
        if model_class is not MeterForConditionalGeneration:
            return {}
        labels = torch.randint(4, self.text_config["vocab_size"], (self.batch_size, self.target_length),
                               generator=torch.Generator().manual_seed(2))  # fmt: skip
        labels[1, -2:] = -100
        return {"labels": labels}

    def _prepare_inputs(self, model_class, inputs_dict):
        if model_class is MeterModel:
            inputs_dict = {k: v for k, v in inputs_dict.items() if not k.startswith("decoder_")}
        return inputs_dict

    def expected_hidden_states(self, config, inputs_dict, model_class=None):
        if model_class is MeterModel:
            return super().expected_hidden_states(config, inputs_dict, model_class)
        fused = self.text_length + self.image_length
        return {
            "decoder_hidden_states": (self.num_decoder_layers + 1, (self.batch_size, self.target_length, self.hidden_size)),
            "encoder_hidden_states": (self.num_fusion_layers + 1, (self.batch_size, fused, self.hidden_size)),
        }

    def expected_attentions(self, config, inputs_dict, model_class=None):
        if model_class is MeterModel:
            return super().expected_attentions(config, inputs_dict, model_class)
        batch, heads, target, count = self.batch_size, self.num_heads, self.target_length, self.num_decoder_layers
        fused = self.text_length + self.image_length
        return {
            "decoder_attentions": (count, (batch, heads, target, target)),
            "cross_attentions": (count, (batch, heads, target, self.text_length)),
            "image_cross_attentions": (count, (batch, heads, target, self.image_length)),
            "encoder_attentions": (self.num_fusion_layers, (batch, heads, fused, fused)),
        }

    def pad_inputs(self, inputs_dict, extra=3):
        padded, _ = super().pad_inputs(inputs_dict, extra)
        text = (slice(None), slice(0, self.text_length))
        # logits keep their shape (the decoder length is unchanged) and are compared as they are
        return padded, {"encoder_last_hidden_state": text}


class MeterGenerationTestMixin(ModelTesterMixin):
    all_model_classes = (MeterModel, MeterForConditionalGeneration)
    auto_class_mapping = {}

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels)
        return self.model_tester._prepare_inputs(model_class, inputs_dict)

    def test_base_checkpoint_loads_into_heads_and_back(self):
        """The common check, except that the generation model's encoder has no poolers (`add_pooling_layer=False`):
        a METER checkpoint loads without missing or unexpected keys and every other weight is equal; back, only the
        poolers are missing (newly initialised)."""
        config, _ = self._config_and_inputs()
        base = self._make_model(MeterModel, config)
        without_poolers = {k: v for k, v in base.state_dict().items() if "_pooler." not in k}
        with tempfile.TemporaryDirectory() as tmp:
            base.save_pretrained(tmp)
            head, info = MeterForConditionalGeneration.from_pretrained(tmp, output_loading_info=True)
        self.assertEqual(info["unexpected_keys"], set() if isinstance(info["unexpected_keys"], set) else [])
        self.assertEqual([k for k in info["missing_keys"] if k.startswith("meter.")], [])
        self.assertIsNone(head.meter.cross_modal_text_pooler)
        self.assert_close(without_poolers, head.meter.state_dict(), atol=0.0, path="base weights")
        with tempfile.TemporaryDirectory() as tmp:
            head.save_pretrained(tmp)
            reloaded, info = MeterModel.from_pretrained(tmp, output_loading_info=True)
        self.assertTrue(all("_pooler." in key for key in info["missing_keys"]), info["missing_keys"])
        reloaded_state = {k: v for k, v in reloaded.state_dict().items() if "_pooler." not in k}
        self.assert_close(head.meter.state_dict(), reloaded_state, atol=0.0, path="back")


class MeterGenerationTiedClipBertTest(MeterGenerationTestMixin, unittest.TestCase):
    def setUp(self):
        self.model_tester = MeterGenerationModelTester(self)


class MeterGenerationUntiedSwinRobertaMergedTest(MeterGenerationTestMixin, unittest.TestCase):
    def setUp(self):
        self.model_tester = MeterGenerationModelTester(
            self, tie=False, text_config=TINY_ROBERTA, vision_config=TINY_SWIN, fusion_type="merged_attention"
        )


# ------------------------------------------------------------------------------------------------- generation specifics


@pytest.fixture
def tiny_generation():
    tester = MeterGenerationModelTester(None, tie=False)
    config, inputs = tester.prepare_config_and_inputs_for_common()
    torch.manual_seed(0)
    model = MeterForConditionalGeneration(config).eval()
    encoder_inputs = {k: v for k, v in inputs.items() if not k.startswith("decoder_")}
    return model, encoder_inputs, inputs


def test_config_is_encoder_decoder_only_with_decoder_layers():
    assert not MeterConfig().is_encoder_decoder
    config = MeterConfig(num_fusion_layers=3, num_decoder_layers=3)
    assert config.is_encoder_decoder and config.decoder_hidden_size == config.hidden_size
    assert config.decoder_start_token_id == 0 and config.eos_token_id == 2  # RoBERTa's <s> and </s>
    decoder_view = config.get_text_config(decoder=True)
    assert decoder_view.num_hidden_layers == 3 and decoder_view.decoder_start_token_id == 0
    assert config.get_text_config().num_hidden_layers == 12  # the text tower, as before
    with pytest.raises(ValueError, match="needs a decoder"):
        MeterForConditionalGeneration(MeterConfig(text_config=TINY_BERT, num_decoder_layers=0))
    with pytest.raises(ValueError, match="decoder_hidden_size"):
        MeterConfig(num_decoder_layers=1, decoder_hidden_size=30, decoder_num_attention_heads=4)


def test_greedy_generate_with_and_without_cache_gives_identical_tokens(tiny_generation):
    model, encoder_inputs, _ = tiny_generation
    cached = model.generate(**encoder_inputs, max_new_tokens=8, do_sample=False, use_cache=True)
    uncached = model.generate(**encoder_inputs, max_new_tokens=8, do_sample=False, use_cache=False)
    assert cached.shape[0] == 3 and torch.equal(cached, uncached)
    assert bool((cached[:, 0] == model.config.decoder_start_token_id).all())


def test_cached_step_logits_equal_full_forward(tiny_generation):
    model, encoder_inputs, inputs = tiny_generation
    decoder_ids = inputs["decoder_input_ids"]
    with torch.no_grad():
        full = model(**inputs).logits
        first = model(**encoder_inputs, decoder_input_ids=decoder_ids[:, :3], use_cache=True)
        encoder_outputs = model.get_encoder()(**encoder_inputs)
        step = model(encoder_outputs=encoder_outputs, attention_mask=encoder_inputs["attention_mask"],
                     decoder_input_ids=decoder_ids[:, 3:], cache=first.cache, use_cache=True)  # fmt: skip
    torch.testing.assert_close(torch.cat([first.logits, step.logits], dim=1), full, atol=1e-5, rtol=1e-5)
    # the two cross-attention blocks share one cross-attention cache layer per decoder layer: text keys, then image
    text_length = encoder_inputs["input_ids"].shape[1]
    keys = step.cache.cross_attention_cache.layers[0].keys
    assert keys.shape[2] == text_length + model.meter.num_image_prefix_tokens + 16


def test_beam_search_and_sampling_run(tiny_generation):
    model, encoder_inputs, _ = tiny_generation
    beams = model.generate(**encoder_inputs, max_new_tokens=6, num_beams=3, num_return_sequences=2)
    assert beams.shape[0] == 6
    torch.manual_seed(0)
    sampled = model.generate(**encoder_inputs, max_new_tokens=6, do_sample=True, top_k=5)
    assert sampled.shape[0] == 3


def test_decoder_reads_both_fused_streams(tiny_generation):
    model, encoder_inputs, inputs = tiny_generation
    with torch.no_grad():
        base = model(**inputs).logits
        other_image = model(**{**inputs, "pixel_values": inputs["pixel_values"].flip(0)}).logits
        other_text = model(**{**inputs, "input_ids": inputs["input_ids"].flip(0)}).logits
        out = model(**inputs, output_attentions=True)
    assert (base - other_image).abs().max() > 1e-3 and (base - other_text).abs().max() > 1e-3
    assert out.cross_attentions[0].shape[-1] == inputs["input_ids"].shape[1]
    assert out.image_cross_attentions[0].shape[-1] == model.meter.num_image_prefix_tokens + 16
    # padded text tokens get no cross-attention weight
    assert float(out.cross_attentions[0][1, :, :, -2:].abs().max()) == 0.0


def test_causal_self_attention(tiny_generation):
    model, _, inputs = tiny_generation
    changed = inputs["decoder_input_ids"].clone()
    changed[:, -1] = 5
    with torch.no_grad():
        before, after = model(**inputs).logits, model(**{**inputs, "decoder_input_ids": changed}).logits
    torch.testing.assert_close(before[:, :-1], after[:, :-1])


def test_labels_are_shifted_right_after_the_start_token(tiny_generation):
    model, encoder_inputs, inputs = tiny_generation
    labels = torch.tensor([[7, 8, 3, -100], [9, 3, -100, -100], [10, 11, 12, 3]])
    with torch.no_grad():
        out = model(**encoder_inputs, labels=labels)
        shifted = torch.tensor([[2, 7, 8, 3], [2, 9, 3, 0], [2, 10, 11, 12]])
        manual = model(**encoder_inputs, decoder_input_ids=shifted)
    torch.testing.assert_close(out.logits, manual.logits)
    expected = torch.nn.functional.cross_entropy(manual.logits.reshape(-1, manual.logits.shape[-1]), labels.reshape(-1),
                                                 ignore_index=-100)  # fmt: skip
    torch.testing.assert_close(out.loss, expected)
    assert out.cache is None


def test_tied_decoder_embeddings_share_the_text_tower_table_and_survive_save_load():
    tester = MeterGenerationModelTester(None, tie=True)
    config, inputs = tester.prepare_config_and_inputs_for_common()
    model = MeterForConditionalGeneration(config)
    text_table = model.meter.text_model.get_input_embeddings().weight
    assert model.decoder_embeddings_tied()
    assert model.decoder.embed_tokens.weight is text_table and model.lm_head.weight is text_table
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        reloaded = MeterForConditionalGeneration.from_pretrained(tmp)
        assert isinstance(reloaded.generation_config, GenerationConfig)
        assert reloaded.generation_config.decoder_start_token_id == 2 and reloaded.generation_config.eos_token_id == 3
        assert isinstance(AutoModel.from_pretrained(tmp), MeterModel)
    assert reloaded.lm_head.weight is reloaded.meter.text_model.get_input_embeddings().weight
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(**inputs).logits, reloaded.eval()(**inputs).logits)
    # a narrower decoder cannot share the table: its own embeddings
    narrow = MeterConfig.from_dict({**config.to_dict(), "decoder_hidden_size": 16, "decoder_num_attention_heads": 2})
    assert not MeterForConditionalGeneration(narrow).decoder_embeddings_tied()


def test_resize_token_embeddings_grows_encoder_decoder_and_head_together():
    tester = MeterGenerationModelTester(None, tie=False)
    config, _ = tester.prepare_config_and_inputs_for_common()
    model = MeterForConditionalGeneration(config)
    model.resize_token_embeddings(110)
    assert model.meter.text_model.get_input_embeddings().weight.shape[0] == 110
    assert model.decoder.embed_tokens.weight.shape[0] == 110 and model.lm_head.weight.shape[0] == 110
    assert model.config.text_config.vocab_size == 110


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda i: i.pop("decoder_input_ids"), "decoder_input_ids"),
        (lambda i: i.update(decoder_input_ids=i["decoder_input_ids"][:2]), "decoder_input_ids"),
        (lambda i: i.update(decoder_input_ids=torch.full((3, 30), 5)), "max_decoder_position_embeddings"),
        (lambda i: i.update(decoder_input_ids=torch.full((3, 4), 500)), "decoder_input_ids"),
        (lambda i: i.update(labels=torch.full((3, 4), 500)), "labels"),
        (lambda i: i.update(decoder_attention_mask=torch.ones(3, 2, dtype=torch.long)), "decoder_attention_mask"),
    ],
)
def test_bad_decoder_inputs_raise_clear_errors(tiny_generation, change, match):
    model, _, inputs = tiny_generation
    inputs = copy.copy(inputs)
    change(inputs)
    with pytest.raises((ValueError, TypeError), match=match):
        model(**inputs)


# ----------------------------------------------------------------------------- masked patch classification, discrete


def test_discrete_mim_head_predicts_codes_of_masked_patches_only():
    tester = MeterModelTester(None)
    config, inputs = tester.prepare_config_and_inputs_for_common()
    config.mim_codebook_size = 16
    torch.manual_seed(0)
    model = MeterForPreTraining(config).eval()
    tokenizer = PatchKMeansTokenizer.fit(torch.randn(16, 3, 32, 32), codebook_size=16, downsample_factor=4)
    mask = model.random_patch_mask(inputs["pixel_values"], torch.Generator().manual_seed(0))
    labels = discrete_mim_labels(tokenizer, inputs["pixel_values"], mask, token_grid=32 // model.image_token_stride())
    assert labels.shape == (3, 16) and bool(((labels == -100) == ~mask).all())
    out = model(**inputs, mim_discrete_labels=labels)
    assert out.mim_discrete_logits.shape == (3, 16, 16)
    expected = torch.nn.functional.cross_entropy(out.mim_discrete_logits[mask], labels[mask])
    torch.testing.assert_close(out.mim_discrete_loss, expected)
    torch.testing.assert_close(out.loss, out.mim_discrete_loss)
    # the labelled patches are the masked ones: same result as passing the mask explicitly
    explicit = model(**inputs, mim_discrete_labels=labels, bool_masked_pos=mask)
    torch.testing.assert_close(explicit.mim_discrete_logits, out.mim_discrete_logits)
    # nothing masked: loss 0, not NaN
    none = model(**inputs, mim_discrete_labels=torch.full((3, 16), -100))
    assert none.mim_discrete_loss.item() == 0.0
    with pytest.raises(ValueError, match="mim_discrete_labels"):
        model(**inputs, mim_discrete_labels=torch.zeros(3, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="mim_codebook_size"):
        model(**inputs, mim_discrete_labels=torch.full((3, 16), 99))


def test_discrete_mim_labels_resize_images_to_the_token_grid():
    tokenizer = PatchKMeansTokenizer.random(codebook_size=32, downsample_factor=8, seed=0)
    pixels = torch.randn(2, 3, 48, 48)  # 6x6 codes at its native size; the model's grid is 4x4
    mask = torch.ones(2, 16, dtype=torch.bool)
    labels = discrete_mim_labels(tokenizer, pixels, mask, token_grid=4)
    assert labels.shape == (2, 16) and int(labels.min()) >= 0 and int(labels.max()) < 32
    resized = torch.nn.functional.interpolate(pixels, size=(32, 32), mode="bicubic", align_corners=False)
    assert torch.equal(labels, tokenizer(resized).reshape(2, -1))
    with pytest.raises(TypeError, match="VisualTokenizer"):
        discrete_mim_labels(lambda x: x, pixels, mask, token_grid=4)
    with pytest.raises(ValueError, match="bool_masked_pos"):
        discrete_mim_labels(tokenizer, pixels, mask[:, :5], token_grid=4)


def test_patch_kmeans_tokenizer_fits_separates_and_round_trips(tmp_path):
    flat = torch.zeros(4, 3, 16, 16)
    edges = torch.zeros(4, 3, 16, 16)
    edges[..., :, :4] = 1.0  # a vertical edge in every 8x8 patch's left half
    edges[..., :, 8:12] = 1.0
    tokenizer = PatchKMeansTokenizer.fit(torch.cat([flat, edges]), codebook_size=2, downsample_factor=8)
    codes = tokenizer(torch.cat([flat[:1], edges[:1]]))
    assert codes.shape == (2, 2, 2) and len(codes[0].unique()) == 1 and len(codes[1].unique()) == 1
    assert codes[0, 0, 0] != codes[1, 0, 0]
    tokenizer.save(tmp_path / "codebook.pt")
    assert torch.equal(PatchKMeansTokenizer.load(tmp_path / "codebook.pt")(edges), tokenizer(edges))


def test_trainer_gradient_accumulation_makes_the_update_of_one_large_batch(tmp_path):
    """transformers' Trainer, 2 accumulation steps of 2 examples vs 1 step of 4: the same SGD update. The Trainer passes
    `num_items_in_batch` (target tokens of both steps) and leaves the loss undivided, so the decoder loss is the token
    mean over the whole accumulated batch, not a mean per step (the micro-batches hold unequal token counts)."""
    from transformers import Trainer, TrainingArguments

    tester = MeterGenerationModelTester(None, tie=False)
    tester.batch_size = 4
    config, inputs = tester.prepare_config_and_inputs_for_common()
    labels = torch.randint(4, tester.text_config["vocab_size"], (4, tester.target_length),
                           generator=torch.Generator().manual_seed(3))  # fmt: skip
    labels[0, 1:] = -100
    labels[1, 3:] = -100  # 1, 3, 5 and 5 target tokens: every split into two pairs is unequal
    columns = {**{k: v for k, v in inputs.items() if not k.startswith("decoder_")}, "labels": labels}
    rows = [{key: value[index] for key, value in columns.items()} for index in range(4)]
    torch.manual_seed(0)
    initial = MeterForConditionalGeneration(config)
    trained = {}
    for batch_size, steps in ((4, 1), (2, 2)):
        model = copy.deepcopy(initial)
        args = TrainingArguments(
            output_dir=str(tmp_path / f"batch{batch_size}"), per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=steps, max_steps=1, max_grad_norm=0.0, report_to="none", save_strategy="no",
            use_cpu=True, dataloader_num_workers=0, seed=0, disable_tqdm=True,
        )  # fmt: skip
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        trainer = Trainer(model=model, args=args, train_dataset=rows, optimizers=(optimizer, None))
        assert trainer.model_accepts_loss_kwargs  # the path that passes num_items_in_batch
        trainer.train()
        trained[batch_size] = dict(model.named_parameters())
    start = dict(initial.named_parameters())
    moved = [name for name, value in trained[4].items() if not torch.equal(value, start[name])]
    assert moved
    for name in moved:
        torch.testing.assert_close(trained[2][name], trained[4][name], rtol=1e-5, atol=1e-6, msg=name)
