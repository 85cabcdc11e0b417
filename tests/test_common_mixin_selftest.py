"""Checks of ``ModelTesterMixin`` itself, on a tiny transformers BERT (base model + sequence-classification head).

``BertMixinSelfTest`` must pass every common check; ``MixinCatchesBugsTest`` breaks the model (or the tester)
on purpose and asserts that the matching check fails, so a check that cannot fail would be noticed.
"""

import unittest
from unittest import mock

import torch
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
)


try:  # tests/ as a package
    from .test_modeling_common import ModelTesterMixin
except ImportError:  # tests/ on sys.path (pytest rootdir-less import mode)
    from test_modeling_common import ModelTesterMixin


class TinyBertModelTester:
    """Tiny BERT in the hf_vl tester protocol (see tests/test_modeling_common.py)."""

    def __init__(self, batch_size=3, seq_length=7, vocab_size=99, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=4, intermediate_size=37, num_labels=3):
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.num_labels = num_labels

    def get_config(self):
        return BertConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            max_position_embeddings=64,
            num_labels=self.num_labels,
        )

    def prepare_config_and_inputs_for_common(self):
        generator = torch.Generator().manual_seed(0)
        shape = (self.batch_size, self.seq_length)
        input_ids = torch.randint(1, self.vocab_size, shape, generator=generator)
        token_type_ids = torch.randint(0, 2, shape, generator=generator)
        lengths = torch.tensor([self.seq_length - 2 * i for i in range(self.batch_size)])  # 7, 5, 3 real tokens
        attention_mask = (torch.arange(self.seq_length)[None, :] < lengths[:, None]).long()
        input_ids = input_ids.masked_fill(attention_mask == 0, 0)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return self.get_config(), inputs

    def prepare_labels(self, model_class, inputs_dict):
        if model_class is BertModel or not issubclass(model_class, BertForSequenceClassification):
            return {}
        return {"labels": torch.arange(self.batch_size) % self.num_labels}

    def expected_hidden_states(self, config, inputs_dict):
        batch_size, seq_length = inputs_dict["input_ids"].shape
        return {"hidden_states": (config.num_hidden_layers + 1, (batch_size, seq_length, config.hidden_size))}

    def expected_attentions(self, config, inputs_dict, model_class=BertModel):
        batch_size, seq_length = inputs_dict["input_ids"].shape
        shape = (batch_size, config.num_attention_heads, seq_length, seq_length)
        expected = {"attentions": (config.num_hidden_layers, shape)}
        if issubclass(model_class, BertModel):  # the base model also returns an empty `cross_attentions` tuple
            expected["cross_attentions"] = (0, ())
        return expected

    def pad_inputs(self, inputs_dict, extra=3):
        batch_size, seq_length = inputs_dict["input_ids"].shape
        zeros = torch.zeros(batch_size, extra, dtype=torch.long)
        padded = {key: torch.cat([value, zeros], dim=1) for key, value in inputs_dict.items()}
        return padded, {"last_hidden_state": (slice(None), slice(0, seq_length))}


class BertMixinSelfTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (BertModel, BertForSequenceClassification)
    auto_class_mapping = {BertForSequenceClassification: AutoModelForSequenceClassification}

    def setUp(self):
        self.model_tester = TinyBertModelTester()
        # transformers' classifier takes `**kwargs`, so the Trainer passes it `num_items_in_batch` and leaves its loss
        # undivided under gradient accumulation, yet its loss is a batch mean: the mixin catches that
        # (MixinCatchesBugsTest); here it runs with the contract declared, as hf_vl's heads declare it
        patcher = mock.patch.object(BertForSequenceClassification, "accepts_loss_kwargs", False, create=True)
        patcher.start()
        self.addCleanup(patcher.stop)


# --------------------------------------------------------------------------- deliberately broken models


class BertWithUninitialisedParameter(BertModel):
    """A custom parameter that ``_init_weights`` never touches."""

    def __init__(self, config):
        super().__init__(config)
        self.scale = nn.Parameter(torch.empty(4))


class BertIgnoringAttentionMask(BertModel):
    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        return super().forward(input_ids=input_ids, **kwargs)


class BertMixingSamples(BertModel):
    """Subtracts the batch mean: each sample depends on the others."""

    def forward(self, *args, **kwargs):
        outputs = super().forward(*args, **kwargs)
        outputs.last_hidden_state = outputs.last_hidden_state - outputs.last_hidden_state.mean(0, keepdim=True)
        return outputs


class BertClassifierWithUnusedLayer(BertForSequenceClassification):
    def __init__(self, config):
        super().__init__(config)
        self.unused = nn.Linear(2, 2)
        self.post_init()


class BertIgnoringResize(BertModel):
    def resize_token_embeddings(self, *args, **kwargs):
        return self.get_input_embeddings()


class BertTesterWithWrongCounts(TinyBertModelTester):
    def expected_hidden_states(self, config, inputs_dict):
        count, shape = super().expected_hidden_states(config, inputs_dict)["hidden_states"]
        return {"hidden_states": (count - 1, shape)}


class BertTesterWithoutPadding(TinyBertModelTester):
    pad_inputs = None


def _run_check(test_name, tester=TinyBertModelTester, **class_attributes):
    """Run one mixin check on a throwaway test class; returns the unittest result."""
    attributes = {
        "all_model_classes": (BertModel, BertForSequenceClassification),
        "setUp": lambda self: setattr(self, "model_tester", tester()),
        **class_attributes,
    }
    case_class = type("ThrowawayCase", (ModelTesterMixin, unittest.TestCase), attributes)
    result = unittest.TestResult()
    case_class(test_name).run(result)
    return result


class MixinCatchesBugsTest(unittest.TestCase):
    def assert_check_fails(self, test_name, expected_message, **kwargs):
        result = _run_check(test_name, **kwargs)
        problems = result.failures + result.errors
        self.assertTrue(problems, f"{test_name} passed on a broken setup")
        self.assertIn(expected_message, "\n".join(trace for _, trace in problems))

    def assert_check_passes(self, test_name, **kwargs):
        result = _run_check(test_name, **kwargs)
        self.assertEqual(result.failures + result.errors, [], f"{test_name} failed")
        self.assertEqual(result.skipped, [], f"{test_name} skipped")

    def test_uninitialised_parameter_is_caught(self):
        classes = {"all_model_classes": (BertWithUninitialisedParameter,)}
        self.assert_check_fails("test_initialization", "scale", **classes)
        self.assert_check_fails("test_init_weights_after_meta_device", "scale", **classes)

    def test_ignored_attention_mask_is_caught(self):
        self.assert_check_fails(
            "test_padding_does_not_change_outputs", "padded", all_model_classes=(BertIgnoringAttentionMask,)
        )

    def test_missing_pad_hook_fails_unless_padding_test_is_off(self):
        self.assert_check_fails("test_padding_does_not_change_outputs", "pad_inputs", tester=BertTesterWithoutPadding)
        result = _run_check(
            "test_padding_does_not_change_outputs", tester=BertTesterWithoutPadding, test_padding=False
        )
        self.assertEqual(len(result.skipped), 1)

    def test_samples_mixed_in_a_batch_are_caught(self):
        self.assert_check_fails("test_batching_equivalence", "sample", all_model_classes=(BertMixingSamples,))

    def test_parameter_without_gradient_is_caught_and_can_be_allowed(self):
        classes = {"all_model_classes": (BertModel, BertClassifierWithUnusedLayer)}
        self.assert_check_fails("test_all_parameters_receive_gradients", "unused.weight", **classes)
        self.assert_check_passes(
            "test_all_parameters_receive_gradients", parameters_without_grad_allowed=(r"^unused\.",), **classes
        )
        self.assert_check_fails(
            "test_all_parameters_receive_gradients", "match no parameter", parameters_without_grad_allowed=("nope",)
        )

    def test_loss_ignoring_the_trainers_num_items_in_batch_is_caught(self):
        self.assert_check_fails("test_loss_follows_the_trainers_gradient_accumulation_contract", "is ignored")

    def test_ignored_resize_is_caught(self):
        self.assert_check_fails("test_resize_token_embeddings", "!=", all_model_classes=(BertIgnoringResize,))

    def test_wrong_hidden_state_count_is_caught(self):
        self.assert_check_fails("test_hidden_states_output", "count", tester=BertTesterWithWrongCounts)

    def test_wrong_auto_class_is_caught(self):
        from transformers import AutoModelForTokenClassification

        self.assert_check_fails(
            "test_auto_classes",
            "maps to",
            auto_class_mapping={BertForSequenceClassification: AutoModelForTokenClassification},
        )


if __name__ == "__main__":
    unittest.main()
