"""Generic model checks shared by every hf_vl architecture (the transformers ``ModelTesterMixin`` way).

An architecture's test module reads::

    class MeterModelTest(ModelTesterMixin, unittest.TestCase):
        all_model_classes = (MeterModel, MeterForQuestionAnswering, MeterForImageAndTextRetrieval)
        auto_class_mapping = {MeterForQuestionAnswering: AutoModelForVisualQuestionAnswering}

        def setUp(self):
            self.model_tester = MeterModelTester(self)

Every check is a ``test_*`` method with real assertions; nothing is skipped silently: a check that cannot
run says why (``skipTest``) or fails with the attribute/hook to provide. All comparisons are fp32 on CPU,
max absolute difference <= ``ATOL`` (1e-5).

Test-class attributes (defaults are the strict choice)
------------------------------------------------------
``all_model_classes``                  tuple of model classes sharing the tester's inputs; must contain the
                                       base model (the class whose ``model.base_model is model``).
``auto_class_mapping = {}``            ``{HeadClass: AutoModelForX}``; every pair must round-trip through the
                                       Auto class. The base model always goes through ``AutoModel``.
``has_attentions = True``              attention weights can be returned (eager); needs ``expected_attentions``.
``test_sdpa = True``                   compare ``attn_implementation="sdpa"`` with ``"eager"`` (eager-only
                                       models, e.g. entmax / adaptive span attention, set ``False``).
``test_gradient_checkpointing = True``
``test_padding = True``                requires ``model_tester.pad_inputs`` (see below).
``parameters_without_grad_allowed = ()``  regexes (``re.search`` on the parameter name) of trainable
                                       parameters that may get no gradient from a head's loss (e.g. the pooler
                                       of a head that does not use it). Each must match some parameter.
``custom_init_parameters = {}``        ``{regex: expected_mean | None}``: parameters/buffers whose value under a
                                       zero-init config is neither mean 0 nor 1 (``None``: finiteness only).
``batching_equivalence_ignore = ()``   output fields that mix samples (e.g. an in-batch similarity matrix).
``bfloat16_close_to_float32 = True``   False where a discrete decision (hard routing) may flip under bf16
                                       rounding: the bf16 load is then checked for dtype and finiteness only.

Override point: ``_prepare_for_class(self, inputs_dict, model_class, return_labels=False)`` turns the
common inputs into one class's forward kwargs (e.g. expand to ``(B, num_choices, L)`` for multiple choice).

Model-tester protocol (``self.model_tester``)
----------------------------------------------
Required:

``prepare_config_and_inputs_for_common() -> (config, inputs_dict)``
    A tiny config (hidden 32, 2 layers, every dropout / layerdrop probability 0) and the forward kwargs of
    the base model for ``batch_size`` samples, WITHOUT labels. Include an attention mask with zeros.
``expected_hidden_states(config, inputs_dict) -> {field: (count, shape)}``
``expected_attentions(config, inputs_dict) -> {field: (count, shape)}``   (when ``has_attentions``)
    ``field`` is the output attribute (``hidden_states``, ``text_hidden_states``, ``vision_hidden_states``,
    ``attentions``, ``cross_attentions`` ...), ``count`` the length of its tuple and ``shape`` either one
    shape shared by all elements (a tuple of ints) or a list of ``count`` shapes (e.g. Swin stages).
    Every non-None output field whose name ends in ``hidden_states`` (resp. ``attentions``) must be
    declared, and declared fields must be None when the flag is off. The hook may take a keyword
    ``model_class`` when a head returns different fields than the base model.
``pad_inputs(inputs_dict, extra=3) -> (padded_inputs, compare)``          (when ``test_padding``)
    ``padded_inputs``: the same batch with ``extra`` pad tokens appended to the text (attention mask 0).
    ``compare``: ``{field: index}``; ``output[field][index]`` must be unchanged by the padding. ``index`` is
    anything a tensor accepts in ``[...]`` applied to both outputs, or ``PaddedIndex(original, padded)``
    when the positions differ (single-stream outputs where image tokens follow the text). Every other
    output tensor whose shape the padding does not change must keep its values too.

Optional:

``batch_size: int``                    otherwise the first dimension of the first tensor input.
``prepare_labels(model_class, inputs_dict) -> dict``  label kwargs for a class (``{}`` when it has no loss).
                                       Classes with labels get the gradient, training and loss checks.
``split_batch(inputs_dict, index) -> dict``  sample ``index`` alone as a batch of one; by default every
                                       tensor whose first dimension is ``batch_size`` is sliced.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import os
import re
import tempfile
from dataclasses import fields, is_dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.utils import ModelOutput


ATOL = 1e-5


class PaddedIndex(NamedTuple):
    """Index of the compared positions in the unpadded (``original``) and padded (``padded``) outputs."""

    original: Any
    padded: Any


def _config_zero_init(config: PretrainedConfig) -> PretrainedConfig:
    """Copy of ``config`` whose initialisation scales are 1e-10, so initialised weights are ~0 or 1."""
    config = copy.deepcopy(config)
    for key, value in list(vars(config).items()):
        scale_like = any(marker in key for marker in ("_range", "_std", "initializer_factor", "layer_scale"))
        if scale_like and isinstance(value, (int, float)) and not isinstance(value, bool):
            setattr(config, key, 1e-10)
        elif isinstance(value, PretrainedConfig):
            setattr(config, key, _config_zero_init(value))
    return config


@contextlib.contextmanager
def _uninitialized_memory_is_nan():
    """Make ``torch.empty`` return NaN (deterministic mode) so a parameter nobody initialises is visible."""
    was_enabled = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    was_filling = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = was_filling
        torch.use_deterministic_algorithms(was_enabled, warn_only=was_warn_only)


def _output_items(outputs) -> list[tuple[str, Any]]:
    """(field, value) pairs of a ModelOutput, including None fields, in declaration order."""
    if is_dataclass(outputs):
        return [(f.name, getattr(outputs, f.name)) for f in fields(outputs)]
    return list(outputs.items())


def _float_tensors(obj):
    """Every floating tensor nested in a ModelOutput / tuple / dict."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point():
            yield obj
    elif isinstance(obj, (dict, ModelOutput)):
        for value in obj.values():
            yield from _float_tensors(value)
    elif isinstance(obj, (tuple, list)):
        for value in obj:
            yield from _float_tensors(value)


def _surrogate_loss(outputs) -> torch.Tensor:
    """Loss for classes without labels: sum of the means of every floating output."""
    tensors = [t for t in _float_tensors(outputs) if t.requires_grad]
    if not tensors:
        raise AssertionError("the model returned no floating tensor that requires grad")
    return sum(t.float().mean() for t in tensors)


def _shapes_of(count: int, shape) -> list[tuple[int, ...]]:
    """Normalise an expected ``shape`` (one shape or a list of ``count`` shapes) to a list of tuples."""
    if len(shape) > 0 and isinstance(shape[0], (tuple, list, torch.Size)):
        if len(shape) != count:
            raise AssertionError(f"tester declared {count} elements but {len(shape)} shapes: {shape}")
        return [tuple(s) for s in shape]
    return [tuple(shape)] * count


class ModelTesterMixin:
    """Generic checks for a family of hf_vl models; see the module docstring for the protocol."""

    model_tester = None
    all_model_classes: tuple = ()
    auto_class_mapping: dict = {}
    has_attentions = True
    test_sdpa = True
    test_gradient_checkpointing = True
    test_padding = True
    parameters_without_grad_allowed: tuple[str, ...] = ()
    custom_init_parameters: dict[str, float | None] = {}
    batching_equivalence_ignore: tuple[str, ...] = ()
    bfloat16_close_to_float32 = True

    # ------------------------------------------------------------------ helpers

    def run(self, result=None):
        """Run each check on one CPU thread: for hidden-32 models thread hand-offs cost more than they save."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return super().run(result)
        finally:
            torch.set_num_threads(threads)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        """Forward kwargs of ``model_class``: the common inputs (copied), plus its labels when asked."""
        inputs_dict = dict(inputs_dict)
        if return_labels:
            prepare_labels = getattr(self.model_tester, "prepare_labels", None)
            if prepare_labels is not None:
                inputs_dict.update(prepare_labels(model_class, inputs_dict) or {})
        return inputs_dict

    def _config_and_inputs(self):
        self.assertTrue(self.all_model_classes, "set `all_model_classes` on the test class")
        return self.model_tester.prepare_config_and_inputs_for_common()

    def _make_model(self, model_class, config, attn_implementation=None, seed=0):
        config = copy.deepcopy(config)
        if attn_implementation is not None:
            config._attn_implementation = attn_implementation
        torch.manual_seed(seed)
        return model_class(config)

    def _label_keys(self, model_class, inputs_dict) -> set[str]:
        labelled = self._prepare_for_class(inputs_dict, model_class, return_labels=True)
        return set(labelled) - set(self._prepare_for_class(inputs_dict, model_class))

    def _classes_with_labels(self, inputs_dict) -> list[type]:
        classes = [cls for cls in self.all_model_classes if self._label_keys(cls, inputs_dict)]
        if not classes:
            self.skipTest("no class in all_model_classes gets labels from model_tester.prepare_labels")
        return classes

    def _base_model_class(self, config):
        for model_class in self.all_model_classes:
            model = self._make_model(model_class, config)
            if model.base_model is model:
                return model_class
        self.fail("all_model_classes has no base model (a class whose `model.base_model is model`)")

    def _batch_size(self, inputs_dict) -> int:
        batch_size = getattr(self.model_tester, "batch_size", None)
        if batch_size is not None:
            return batch_size
        for value in inputs_dict.values():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                return value.shape[0]
        self.fail("cannot infer the batch size: give the model tester a `batch_size` attribute")

    def _split_batch(self, inputs_dict, index, batch_size):
        split_batch = getattr(self.model_tester, "split_batch", None)
        if split_batch is not None:
            return split_batch(inputs_dict, index)
        return {
            key: value[index : index + 1]
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch_size
            else value
            for key, value in inputs_dict.items()
        }

    def _call_tester_hook(self, name, config, inputs_dict, model_class):
        hook = getattr(self.model_tester, name, None)
        if hook is None:
            self.fail(
                f"the model tester must define `{name}(config, inputs_dict)`; see tests/test_modeling_common.py"
            )
        if "model_class" in inspect.signature(hook).parameters:
            return hook(config, inputs_dict, model_class=model_class)
        return hook(config, inputs_dict)

    def assert_close(self, expected, actual, atol=ATOL, path="outputs"):
        """Recursive comparison of ModelOutputs / tuples / tensors; fails with the path of the first difference."""
        if isinstance(expected, (ModelOutput, dict)):
            self.assertIsInstance(actual, (ModelOutput, dict), f"{path}: expected a mapping, got {type(actual)}")
            self.assertEqual(list(expected.keys()), list(actual.keys()), f"{path}: fields differ")
            for key in expected:
                self.assert_close(expected[key], actual[key], atol, f"{path}.{key}")
        elif isinstance(expected, (tuple, list)):
            self.assertIsInstance(actual, (tuple, list), f"{path}: expected a sequence, got {type(actual)}")
            self.assertEqual(len(expected), len(actual), f"{path}: lengths differ")
            for index, (exp, act) in enumerate(zip(expected, actual)):
                self.assert_close(exp, act, atol, f"{path}[{index}]")
        elif isinstance(expected, torch.Tensor):
            self.assertIsInstance(actual, torch.Tensor, f"{path}: expected a tensor, got {type(actual)}")
            self.assertEqual(expected.shape, actual.shape, f"{path}: shapes differ")
            if not expected.is_floating_point():
                self.assertTrue(torch.equal(expected, actual), f"{path}: integer/bool tensors differ")
                return
            self.assertTrue(torch.isfinite(expected).all(), f"{path}: reference has non-finite values")
            self.assertTrue(torch.isfinite(actual).all(), f"{path}: non-finite values")
            if expected.numel():
                max_diff = (expected.detach().float() - actual.detach().float()).abs().max().item()
                self.assertLessEqual(max_diff, atol, f"{path}: max abs diff {max_diff:.3g} > {atol}")
        else:
            self.assertEqual(expected, actual, f"{path}: values differ")

    def _slice_sample(self, outputs, index, batch_size, path="outputs"):
        """Sample ``index`` of batched outputs, keeping a batch dimension of one."""
        if isinstance(outputs, ModelOutput):
            return {
                key: self._slice_sample(value, index, batch_size, f"{path}.{key}")
                for key, value in outputs.items()
                if key not in self.batching_equivalence_ignore
            }
        if isinstance(outputs, (tuple, list)):
            return [self._slice_sample(value, index, batch_size, f"{path}[{i}]") for i, value in enumerate(outputs)]
        if isinstance(outputs, torch.Tensor) and outputs.dim() > 0:
            self.assertEqual(
                outputs.shape[0],
                batch_size,
                f"{path} has shape {tuple(outputs.shape)} without a leading batch dimension {batch_size}; "
                "list the field in `batching_equivalence_ignore` if it mixes samples",
            )
            return outputs[index : index + 1]
        return outputs

    # ------------------------------------------------------------------ 1. save / load

    def test_save_load(self):
        config, inputs_dict = self._config_and_inputs()
        for model_class in self.all_model_classes:
            with self.subTest(model_class=model_class.__name__):
                model = self._make_model(model_class, config).eval()
                inputs = self._prepare_for_class(inputs_dict, model_class)
                with torch.no_grad():
                    expected = model(**inputs)
                with tempfile.TemporaryDirectory() as tmp:
                    model.save_pretrained(tmp)
                    saved = sorted(os.listdir(tmp))
                    self.assertIn("model.safetensors", saved)
                    self.assertNotIn("pytorch_model.bin", saved)
                    reloaded, info = model_class.from_pretrained(tmp, output_loading_info=True)
                for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
                    self.assertEqual(len(info[key]), 0, f"{key} after reload: {info[key]}")
                self.assertIsInstance(reloaded, model_class)
                reloaded_state = reloaded.state_dict()
                self.assertEqual(set(model.state_dict()), set(reloaded_state))
                for name, tensor in model.state_dict().items():
                    self.assertTrue(torch.equal(tensor, reloaded_state[name]), f"{name} changed by save/load")
                with torch.no_grad():
                    actual = reloaded.eval()(**inputs)
                self.assert_close(expected, actual)

    def test_resize_token_embeddings(self):
        """`resize_token_embeddings` grows and shrinks the word table, the text config's `vocab_size` and any output
        embeddings together (a tied decoder stays tied), and the model still runs on ids of the new size."""
        config, inputs_dict = self._config_and_inputs()
        for model_class in self.all_model_classes:
            with self.subTest(model_class=model_class.__name__):
                model = self._make_model(model_class, config).eval()
                embeddings = model.get_input_embeddings()
                self.assertIsInstance(embeddings, nn.Embedding, "get_input_embeddings() must return the word table")
                size = embeddings.num_embeddings
                tied = (model.get_output_embeddings() is not None
                        and model.get_output_embeddings().weight is embeddings.weight)  # fmt: skip
                for new_size in (size + 10, size - 3):
                    model.resize_token_embeddings(new_size)
                    self.assertEqual(model.get_input_embeddings().num_embeddings, new_size)
                    self.assertEqual(model.config.get_text_config().vocab_size, new_size, "config vocab_size")
                    output = model.get_output_embeddings()
                    if output is not None:
                        self.assertEqual(output.weight.shape[0], new_size, "output embeddings not resized")
                        if tied:
                            self.assertIs(output.weight, model.get_input_embeddings().weight, "untied by the resize")
                    inputs = self._prepare_for_class(inputs_dict, model_class)
                    if "input_ids" in inputs:
                        inputs["input_ids"] = inputs["input_ids"].clamp(max=new_size - 1)
                    with torch.no_grad():
                        model(**inputs)

    def test_load_with_a_different_number_of_labels(self):
        """A head saved with `num_labels` classes loads with more through `ignore_mismatched_sizes=True` (the new
        classifier freshly initialised, its logits of the new width) and refuses to load without it. A class whose
        weights do not depend on `num_labels` (base model, LM, retrieval, choice or region scores) loads with any."""
        config, inputs_dict = self._config_and_inputs()
        more = config.num_labels + 3
        labels = {"id2label": {i: f"class_{i}" for i in range(more)}, "label2id": {f"class_{i}": i for i in range(more)}}
        wider_config = copy.deepcopy(config)
        wider_config.update({"num_labels": more, **labels})
        for model_class in self.all_model_classes:
            with self.subTest(model_class=model_class.__name__), tempfile.TemporaryDirectory() as tmp:
                model = self._make_model(model_class, config).eval()
                wider = self._make_model(model_class, wider_config).state_dict()
                has_classifier = any(tensor.shape != wider[name].shape for name, tensor in model.state_dict().items())
                model.save_pretrained(tmp)
                inputs = self._prepare_for_class(inputs_dict, model_class)
                if not has_classifier:
                    _, info = model_class.from_pretrained(tmp, num_labels=more, output_loading_info=True, **labels)
                    self.assertFalse(info["mismatched_keys"] or info["missing_keys"], info)
                    continue
                with self.assertRaises(RuntimeError):
                    model_class.from_pretrained(tmp, num_labels=more, **labels)
                reloaded, info = model_class.from_pretrained(tmp, num_labels=more, ignore_mismatched_sizes=True,
                                                             output_loading_info=True, **labels)  # fmt: skip
                self.assertTrue(info["mismatched_keys"], "no mismatched key reported")
                with torch.no_grad():
                    logits = reloaded.eval()(**inputs).logits
                self.assertEqual(logits.shape[-1], more)
                self.assertTrue(torch.isfinite(logits).all(), "non-finite logits from the new classifier")

    def test_from_pretrained_in_bfloat16_with_a_device_map(self):
        """`from_pretrained(folder, dtype=torch.bfloat16, device_map="auto")` (accelerate's dispatch): every floating
        weight outside `_keep_in_fp32_modules` is bf16, and the bf16 forward on bf16 inputs stays finite and close to
        the fp32 one (relative to the output's scale)."""
        config, inputs_dict = self._config_and_inputs()
        for model_class in self.all_model_classes:
            with self.subTest(model_class=model_class.__name__), tempfile.TemporaryDirectory() as tmp:
                model = self._make_model(model_class, config).eval()
                model.save_pretrained(tmp)
                half = model_class.from_pretrained(tmp, dtype=torch.bfloat16, device_map="auto").eval()
                keep = tuple(getattr(half, "_keep_in_fp32_modules", None) or ())
                wrong = [name for name, param in half.named_parameters()
                         if param.dtype != torch.bfloat16 and not any(module in name for module in keep)]  # fmt: skip
                self.assertEqual(wrong, [], "parameters not loaded in bfloat16")
                inputs = self._prepare_for_class(inputs_dict, model_class)
                half_inputs = {key: value.to(torch.bfloat16) if torch.is_tensor(value) and value.is_floating_point()
                               else value for key, value in inputs.items()}  # fmt: skip
                with torch.no_grad():
                    expected, actual = model(**inputs), half(**half_inputs)
                for key, value in expected.items():
                    if not torch.is_tensor(value) or not value.is_floating_point():
                        continue
                    low = actual[key].float()
                    self.assertTrue(torch.isfinite(low).all(), f"{key}: non-finite in bfloat16")
                    if self.bfloat16_close_to_float32:
                        scale = value.abs().max().clamp(min=1.0)
                        self.assertLess(((low - value).abs().max() / scale).item(), 0.1, f"{key}: bf16 far from fp32")

    # ------------------------------------------------------------------ 2. Auto classes, base <-> head

    def test_auto_classes(self):
        config, inputs_dict = self._config_and_inputs()
        self.assertIn(config.model_type, CONFIG_MAPPING, f"model_type {config.model_type!r} not in AutoConfig")
        self.assertIs(CONFIG_MAPPING[config.model_type], type(config))
        base_class = self._base_model_class(config)
        with tempfile.TemporaryDirectory() as tmp:
            self._make_model(base_class, config).save_pretrained(tmp)
            self.assertIsInstance(AutoConfig.from_pretrained(tmp), type(config))
            self.assertIsInstance(AutoModel.from_pretrained(tmp), base_class)
        for model_class, auto_class in self.auto_class_mapping.items():
            with self.subTest(model_class=model_class.__name__), tempfile.TemporaryDirectory() as tmp:
                self.assertIn(model_class, self.all_model_classes)
                model = self._make_model(model_class, config)
                model.save_pretrained(tmp)
                loaded = auto_class.from_pretrained(tmp)
                self.assertIs(type(loaded), model_class, f"{auto_class.__name__} maps to {type(loaded).__name__}")
                self.assert_close(model.state_dict(), loaded.state_dict(), atol=0.0, path="state_dict")

    def test_base_checkpoint_loads_into_heads_and_back(self):
        config, _ = self._config_and_inputs()
        base_class = self._base_model_class(config)
        base = self._make_model(base_class, config)
        base_state = base.state_dict()
        for head_class in self.all_model_classes:
            if head_class is base_class:
                continue
            with self.subTest(head_class=head_class.__name__):
                prefix = head_class.base_model_prefix
                self.assertTrue(prefix, f"{head_class.__name__} needs a base_model_prefix")
                with tempfile.TemporaryDirectory() as tmp:
                    base.save_pretrained(tmp)
                    head, info = head_class.from_pretrained(tmp, output_loading_info=True)
                self.assertIsInstance(head.base_model, base_class, f"{head_class.__name__}.{prefix} is no base model")
                self.assertEqual(len(info["unexpected_keys"]), 0, info["unexpected_keys"])
                self.assertEqual(len(info["mismatched_keys"]), 0, info["mismatched_keys"])
                missing_base = [key for key in info["missing_keys"] if key.startswith(f"{prefix}.")]
                self.assertEqual(missing_base, [], "base weights missing when loading a base checkpoint")
                self.assert_close(base_state, head.base_model.state_dict(), atol=0.0, path="base weights")
                # ... and back: a head checkpoint loads into the base model, dropping only head weights
                with tempfile.TemporaryDirectory() as tmp:
                    head.save_pretrained(tmp)
                    reloaded_base, info = base_class.from_pretrained(tmp, output_loading_info=True)
                self.assertEqual(len(info["missing_keys"]), 0, info["missing_keys"])
                self.assert_close(head.base_model.state_dict(), reloaded_base.state_dict(), atol=0.0, path="back")

    # ------------------------------------------------------------------ 3. sdpa vs eager

    def test_sdpa_matches_eager(self):
        if not self.test_sdpa:
            self.skipTest("test_sdpa = False (eager-only attention)")
        config, inputs_dict = self._config_and_inputs()
        for model_class in self.all_model_classes:
            with self.subTest(model_class=model_class.__name__):
                self.assertTrue(
                    getattr(model_class, "_supports_sdpa", False),
                    f"{model_class.__name__}._supports_sdpa is False; set test_sdpa = False for eager-only models",
                )
                inputs = self._prepare_for_class(inputs_dict, model_class)
                with tempfile.TemporaryDirectory() as tmp:
                    self._make_model(model_class, config, attn_implementation="eager").save_pretrained(tmp)
                    eager = model_class.from_pretrained(tmp, attn_implementation="eager").eval()
                    sdpa = model_class.from_pretrained(tmp, attn_implementation="sdpa").eval()
                self.assertEqual(eager.config._attn_implementation, "eager")
                self.assertEqual(sdpa.config._attn_implementation, "sdpa")
                with torch.no_grad():
                    expected = eager(**inputs, output_hidden_states=True)
                    actual = sdpa(**inputs, output_hidden_states=True)
                self.assert_close(expected, actual)

    # ------------------------------------------------------------------ 4. tuple vs dict

    def test_tuple_and_dict_outputs_match(self):
        config, inputs_dict = self._config_and_inputs()
        for model_class in self.all_model_classes:
            model = self._make_model(model_class, config, attn_implementation="eager").eval()
            variants = {"plain": {}, "hidden_states": {"output_hidden_states": True}}
            if self.has_attentions:
                variants["all"] = {"output_hidden_states": True, "output_attentions": True}
            for return_labels in (False, True):
                inputs = self._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
                for name, flags in variants.items():
                    with self.subTest(model_class=model_class.__name__, labels=return_labels, flags=name):
                        with torch.no_grad():
                            dict_outputs = model(**inputs, **flags)
                            tuple_outputs = model(**inputs, **flags, return_dict=False)
                        self.assertIsInstance(dict_outputs, ModelOutput)
                        self.assertIs(type(tuple_outputs), tuple)
                        self.assert_close(dict_outputs.to_tuple(), tuple_outputs, path="return_dict=False")

    # ------------------------------------------------------------------ 5. hidden states and attentions

    def _check_collected(self, outputs, expected, suffix, flag, where):
        """Declared fields have (count, shape); undeclared ``*suffix`` fields are None."""
        present = {key: value for key, value in _output_items(outputs) if value is not None}
        undeclared = [key for key in present if key.endswith(suffix) and key not in expected]
        self.assertEqual(undeclared, [], f"{where}: fields returned but not declared by the tester")
        for field, (count, shape) in expected.items():
            self.assertIn(field, present, f"{where}: `{field}` missing with {flag}=True")
            value = present[field]
            self.assertIsInstance(value, (tuple, list), f"{where}: `{field}` should be a tuple")
            self.assertEqual(len(value), count, f"{where}: `{field}` count")
            for index, (tensor, want) in enumerate(zip(value, _shapes_of(count, shape))):
                self.assertEqual(tuple(tensor.shape), want, f"{where}: `{field}`[{index}] shape")
                self.assertTrue(torch.isfinite(tensor).all(), f"{where}: `{field}`[{index}] non-finite")

    def _check_not_collected(self, outputs, expected, suffix, where):
        items = dict(_output_items(outputs))
        leaked = [k for k, v in items.items() if v is not None and (k in expected or k.endswith(suffix))]
        self.assertEqual(leaked, [], f"{where}: returned without being asked for")

    def _check_output_collection(self, hook, flag, suffix):
        config, inputs_dict = self._config_and_inputs()
        for model_class in self.all_model_classes:
            expected = self._call_tester_hook(hook, config, inputs_dict, model_class)
            self.assertTrue(expected, f"`{hook}` declared no field")
            inputs = self._prepare_for_class(inputs_dict, model_class)
            with self.subTest(model_class=model_class.__name__):
                model = self._make_model(model_class, config, attn_implementation="eager").eval()
                with torch.no_grad():
                    self._check_not_collected(model(**inputs), expected, suffix, f"{model_class.__name__} default")
                    self._check_collected(model(**inputs, **{flag: True}), expected, suffix, flag, "kwarg")
                flagged_config = copy.deepcopy(config)
                flagged_config._attn_implementation = "eager"
                setattr(flagged_config, flag, True)
                model = self._make_model(model_class, flagged_config).eval()
                with torch.no_grad():
                    self._check_collected(model(**inputs), expected, suffix, flag, f"config.{flag}")

    def test_hidden_states_output(self):
        self._check_output_collection("expected_hidden_states", "output_hidden_states", "hidden_states")

    def test_attention_outputs(self):
        if not self.has_attentions:
            self.skipTest("has_attentions = False")
        self._check_output_collection("expected_attentions", "output_attentions", "attentions")

    # ------------------------------------------------------------------ 6. gradient checkpointing

    def _loss_and_grads(self, model, inputs, use_labels):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        outputs = model(**inputs)
        loss = outputs.loss if use_labels else _surrogate_loss(outputs)
        loss.backward()
        grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
        return loss.detach(), grads

    def test_gradient_checkpointing(self):
        if not self.test_gradient_checkpointing:
            self.skipTest("test_gradient_checkpointing = False")
        config, inputs_dict = self._config_and_inputs()
        for model_class in self.all_model_classes:
            with self.subTest(model_class=model_class.__name__):
                self.assertTrue(model_class.supports_gradient_checkpointing, f"{model_class.__name__} does not")
                use_labels = bool(self._label_keys(model_class, inputs_dict))
                inputs = self._prepare_for_class(inputs_dict, model_class, return_labels=use_labels)
                model = self._make_model(model_class, config).train()
                expected_loss, expected_grads = self._loss_and_grads(model, inputs, use_labels)

                enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
                enable()
                flag = "is_activation_checkpointing"  # transformers >= 5.23; `is_gradient_checkpointing` before
                flag = flag if hasattr(type(model), flag) else "is_gradient_checkpointing"
                self.assertTrue(getattr(model, flag), f"{flag} is False after enabling it")
                checkpointed_calls = []
                for module in model.modules():
                    func = module.__dict__.get("_gradient_checkpointing_func")
                    if func is not None:

                        def counted(*args, _func=func, **kwargs):
                            checkpointed_calls.append(1)
                            return _func(*args, **kwargs)

                        module._gradient_checkpointing_func = counted
                loss, grads = self._loss_and_grads(model, inputs, use_labels)
                self.assertGreater(len(checkpointed_calls), 0, "no layer went through the checkpoint function")
                self.assert_close(expected_loss, loss, path="loss")
                self.assertEqual(sorted(expected_grads), sorted(grads), "parameters with gradients differ")
                for name in expected_grads:
                    self.assert_close(expected_grads[name], grads[name], path=f"grad[{name}]")

    # ------------------------------------------------------------------ 7. every parameter gets a gradient

    def test_all_parameters_receive_gradients(self):
        config, inputs_dict = self._config_and_inputs()
        allowed = [re.compile(pattern) for pattern in self.parameters_without_grad_allowed]
        all_names: set[str] = set()
        for model_class in self._classes_with_labels(inputs_dict):
            with self.subTest(model_class=model_class.__name__):
                model = self._make_model(model_class, config).train()
                inputs = self._prepare_for_class(inputs_dict, model_class, return_labels=True)
                torch.manual_seed(0)
                loss = model(**inputs).loss
                self.assertTrue(loss.requires_grad, "the loss does not depend on any parameter")
                loss.backward()
                without_grad, non_finite = [], []
                for name, param in model.named_parameters():
                    all_names.add(name)
                    if not param.requires_grad or any(p.search(name) for p in allowed):
                        continue
                    if param.grad is None:
                        without_grad.append(name)
                    elif not torch.isfinite(param.grad).all():
                        non_finite.append(name)
                self.assertEqual(without_grad, [], "trainable parameters without gradient")
                self.assertEqual(non_finite, [], "non-finite gradients")
        stale = [p.pattern for p in allowed if not any(p.search(name) for name in all_names)]
        self.assertEqual(stale, [], "parameters_without_grad_allowed patterns that match no parameter")

    # ------------------------------------------------------------------ 8. batching and padding

    def test_batching_equivalence(self):
        config, inputs_dict = self._config_and_inputs()
        batch_size = self._batch_size(inputs_dict)
        self.assertGreater(batch_size, 1, "batching equivalence needs a batch of at least 2")
        for model_class in self.all_model_classes:
            with self.subTest(model_class=model_class.__name__):
                model = self._make_model(model_class, config).eval()
                with torch.no_grad():
                    batched = model(**self._prepare_for_class(inputs_dict, model_class))
                    for index in range(batch_size):
                        single_inputs = self._split_batch(inputs_dict, index, batch_size)
                        single = model(**self._prepare_for_class(single_inputs, model_class))
                        single = {k: v for k, v in single.items() if k not in self.batching_equivalence_ignore}
                        expected = self._slice_sample(batched, index, batch_size)
                        self.assert_close(expected, single, path=f"sample {index}")

    def test_padding_does_not_change_outputs(self):
        if not self.test_padding:
            self.skipTest("test_padding = False")
        pad_inputs = getattr(self.model_tester, "pad_inputs", None)
        self.assertIsNotNone(
            pad_inputs,
            "test_padding = True needs `model_tester.pad_inputs(inputs_dict, extra=3)` (or set test_padding = False)",
        )
        config, inputs_dict = self._config_and_inputs()
        padded_dict, compare = pad_inputs(dict(inputs_dict), extra=3)
        self.assertTrue(compare, "pad_inputs returned nothing to compare")
        grown = [
            key
            for key, value in padded_dict.items()
            if isinstance(value, torch.Tensor)
            and (key not in inputs_dict or getattr(inputs_dict[key], "shape", None) != value.shape)
        ]
        self.assertTrue(grown, "pad_inputs did not lengthen any input")
        compared_fields = set()
        for model_class in self.all_model_classes:
            with self.subTest(model_class=model_class.__name__):
                model = self._make_model(model_class, config).eval()
                with torch.no_grad():
                    original = model(**self._prepare_for_class(inputs_dict, model_class))
                    padded = model(**self._prepare_for_class(padded_dict, model_class))
                self.assertEqual(list(original.keys()), list(padded.keys()))
                compared = 0
                for field in original:
                    before, after = original[field], padded[field]
                    if field in compare:
                        index = compare[field]
                        if not isinstance(index, PaddedIndex):
                            index = PaddedIndex(index, index)
                        self.assert_close(before[index.original], after[index.padded], path=f"padded {field}")
                        compared_fields.add(field)
                        compared += 1
                    elif isinstance(before, torch.Tensor) and before.shape == after.shape:
                        self.assert_close(before, after, path=f"padded {field} (same shape)")
                        compared += 1
                self.assertGreater(compared, 0, f"no output of {model_class.__name__} was compared")
        unused = sorted(set(compare) - compared_fields)
        self.assertEqual(unused, [], "pad_inputs `compare` fields that no model class returns")

    # ------------------------------------------------------------------ 9. weight initialisation

    def _check_initialised(self, model, where):
        custom = {re.compile(pattern): mean for pattern, mean in self.custom_init_parameters.items()}
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if not tensor.is_floating_point():
                continue
            self.assertTrue(torch.isfinite(tensor).all(), f"{where}: {name} holds non-finite (uninitialised) values")
            matches = [mean for pattern, mean in custom.items() if pattern.search(name)]
            if matches:
                if matches[0] is not None:
                    self.assertAlmostEqual(tensor.float().mean().item(), matches[0], places=5, msg=f"{where}: {name}")
                continue
            if isinstance(tensor, torch.nn.Parameter):
                mean = ((tensor.data.float().mean() * 1e9).round() / 1e9).item()
                self.assertIn(mean, [0.0, 1.0], f"{where}: parameter {name} is not covered by _init_weights")

    def test_initialization(self):
        config, _ = self._config_and_inputs()
        zero_config = _config_zero_init(config)
        for model_class in self.all_model_classes:
            with self.subTest(model_class=model_class.__name__), _uninitialized_memory_is_nan():
                self._check_initialised(self._make_model(model_class, zero_config), model_class.__name__)

    def test_init_weights_after_meta_device(self):
        """What from_pretrained does for missing keys: build on meta, materialise, run ``_init_weights``."""
        config, _ = self._config_and_inputs()
        zero_config = _config_zero_init(config)
        for model_class in self.all_model_classes:
            with self.subTest(model_class=model_class.__name__):
                reference = self._make_model(model_class, zero_config)
                with torch.device("meta"):
                    model = model_class(copy.deepcopy(zero_config))
                with _uninitialized_memory_is_nan():
                    model.to_empty(device="cpu")
                    model.tie_weights()
                    model.initialize_weights()
                self._check_initialised(model, f"{model_class.__name__} (meta)")
                reference_buffers = dict(reference.named_buffers())
                for name, buffer in model.named_buffers():
                    if any(re.search(p, name) for p in self.custom_init_parameters):
                        continue
                    self.assertTrue(torch.equal(buffer, reference_buffers[name]), f"buffer {name} not re-initialised")

    # ------------------------------------------------------------------ 10. training smoke test

    def test_training_step(self):
        config, inputs_dict = self._config_and_inputs()
        for model_class in self._classes_with_labels(inputs_dict):
            with self.subTest(model_class=model_class.__name__):
                model = self._make_model(model_class, config).train()
                inputs = self._prepare_for_class(inputs_dict, model_class, return_labels=True)
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
                before = {n: p.detach().clone() for n, p in model.named_parameters()}
                outputs = model(**inputs)
                self.assertEqual(list(outputs.keys())[0], "loss", "loss must be the first output")
                self.assertEqual(fields(outputs)[0].name, "loss", "loss must be the first output field")
                self.assertEqual(outputs.loss.dim(), 0, "the loss must be a scalar")
                self.assertTrue(torch.isfinite(outputs.loss), f"loss is {outputs.loss.item()}")
                with torch.no_grad():
                    first = model(**inputs, return_dict=False)[0]
                self.assertEqual(first.dim(), 0, "return_dict=False must put the loss first")
                outputs.loss.backward()
                optimizer.step()
                changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]
                self.assertTrue(changed, "the optimizer step changed no parameter")
                self.assertTrue(torch.isfinite(model(**inputs).loss), "loss non-finite after one step")

    def test_loss_follows_the_trainers_gradient_accumulation_contract(self):
        """The Trainer passes `num_items_in_batch` (the label count over all accumulation steps) to a model that
        accepts loss kwargs (`accepts_loss_kwargs`, else a `forward(**kwargs)`) and then leaves its loss undivided:
        such a loss must be normalised by `num_items_in_batch`. Any other model's loss is divided by the accumulation
        steps, so it must be a per-batch mean that `num_items_in_batch` leaves alone."""
        config, inputs_dict = self._config_and_inputs()
        for model_class in self._classes_with_labels(inputs_dict):
            with self.subTest(model_class=model_class.__name__):
                model = self._make_model(model_class, config).eval()
                parameters = inspect.signature(model.forward).parameters
                var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
                if not var_keyword and "num_items_in_batch" not in parameters:
                    continue  # nothing the Trainer could pass: it divides the loss by the accumulation steps
                accepts = getattr(model, "accepts_loss_kwargs", var_keyword)  # the Trainer's own rule
                inputs = self._prepare_for_class(inputs_dict, model_class, return_labels=True)
                with torch.no_grad():
                    torch.manual_seed(0)
                    plain = model(**inputs).loss
                    torch.manual_seed(0)
                    few = model(**inputs, num_items_in_batch=torch.tensor(3)).loss
                    torch.manual_seed(0)
                    many = model(**inputs, num_items_in_batch=torch.tensor(6)).loss
                if accepts:
                    self.assertFalse(torch.allclose(few, many), "num_items_in_batch is ignored by a model that "
                                                                "accepts loss kwargs: set accepts_loss_kwargs = False")
                    self.assert_close(few, 2 * many, path="loss with num_items_in_batch 3 vs 6")
                else:
                    self.assert_close(plain, few, path="loss with num_items_in_batch (accepts_loss_kwargs = False)")

    # ------------------------------------------------------------------ 11. config and parameter count

    def test_num_parameters(self):
        config, _ = self._config_and_inputs()
        for model_class in self.all_model_classes:
            model = self._make_model(model_class, config)
            total = sum(p.numel() for p in model.parameters())
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            self.assertEqual(model.num_parameters(), total)
            self.assertEqual(model.num_parameters(only_trainable=True), trainable)
            self.assertGreater(total, 0)

    def test_config_round_trip(self):
        config, _ = self._config_and_inputs()
        config_class = type(config)
        configs = [config] + [self._make_model(cls, config).config for cls in self.all_model_classes]
        for original in configs:
            as_dict = original.to_dict()
            self.assertEqual(config_class.from_dict(as_dict).to_dict(), as_dict, "from_dict(to_dict())")
            with tempfile.TemporaryDirectory() as tmp:
                original.save_pretrained(tmp)
                reloaded = config_class.from_pretrained(tmp)
                json_path = os.path.join(tmp, "copy.json")
                original.to_json_file(json_path)
                from_json = config_class.from_json_file(json_path)
            self.assertEqual(reloaded.to_dict(), as_dict, "save_pretrained / from_pretrained")
            self.assertEqual(from_json.to_dict(), as_dict, "to_json_file / from_json_file")
