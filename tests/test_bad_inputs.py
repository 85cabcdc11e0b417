"""A catalogue of bad inputs, tried as a hostile user would: each must raise a clear `ValueError` / `TypeError` (or
`FileNotFoundError` for a missing file) whose message names the argument (or config field, or file) and says what was
expected and what was given; never an error from deep inside torch / PIL / zipfile, never a silent result.

The catalogue is `CASES`, built from one list per section (processor, image processor, pipelines, regions, config,
converter). Each entry is a `BadInput(name, call, error, match)`: `call(inputs)` gets the shared, lazily built
`Inputs` (tiny METER checkpoints and pipelines, tokenizer, images, region processors, the converter, scratch files),
`error` is the exception type and `match` a regex its message must match (`re.search`). To add a section (e.g. the
model forward), write a list of `BadInput` and add it to `CASES` at the bottom of the file.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch

from hf_vl import MeterConfig, MeterImageProcessor, MeterProcessor
from hf_vl.regions import boxes_to_visual_pos, normalize_boxes, validate_region_inputs


TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS / "pipelines"))  # the tiny METER checkpoint builders of the pipeline tests
from vl_pipeline_test_utils import build_tiny_meter, tiny_meter_config, tiny_meter_processor  # noqa: E402


CONVERTER = TESTS.parent / "conversion" / "convert_meter_original_to_hf.py"
ORIGINAL_CHECKPOINT = TESTS / "fixtures" / "meter_clip" / "checkpoint.ckpt"


@dataclass(frozen=True)
class BadInput:
    name: str
    call: Callable[[Inputs], Any]
    error: type[Exception]
    match: str  # regex the message must match; it names the argument


class Inputs:
    """What the cases call, built on first use and shared by all cases of the session."""

    def __init__(self, root: Path):
        self.root = root

    # --- METER processor -------------------------------------------------------------------------------------------
    @cached_property
    def processor(self) -> MeterProcessor:
        return tiny_meter_processor()  # real WordPiece tokenizer (all-MiniLM-L6-v2), 32 px images

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def image_processor(self) -> MeterImageProcessor:
        return self.processor.image_processor

    @cached_property
    def image(self) -> PIL.Image.Image:
        rng = np.random.default_rng(0)
        return PIL.Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))

    # --- pipelines over tiny saved checkpoints ---------------------------------------------------------------------
    def checkpoint(self, head: str) -> str:
        folder = self.root / f"tiny-meter-{head}"
        if not folder.exists():
            build_tiny_meter(head, str(folder))
        return str(folder)

    def pipeline(self, task: str, head: str, **kwargs):
        from transformers import pipeline

        return pipeline(task, model=self.checkpoint(head), device="cpu", **kwargs)

    @cached_property
    def vqa(self):
        return self.pipeline("vl-question-answering", "vqa")

    @cached_property
    def zero_shot(self):
        return self.pipeline("itm-zero-shot-image-classification", "pretraining")

    @cached_property
    def retrieval(self):
        return self.pipeline("image-text-retrieval", "retrieval")

    def processor_with(self, max_text_len: int = 40, **image_kwargs) -> MeterProcessor:
        """A processor for the tiny checkpoints (32 px, 8 px patches, 64 text positions) with other settings."""
        image_kwargs.setdefault("resolution", 32)
        return MeterProcessor(MeterImageProcessor(**image_kwargs), self.tokenizer, max_text_len=max_text_len)

    # --- regions ---------------------------------------------------------------------------------------------------
    @cached_property
    def region_processor(self):
        from hf_vl.regions import RegionProcessor

        return RegionProcessor(self.tokenizer, feature_extractor=None, feat_dim=8, pos_dim=4)

    @cached_property
    def grid_region_processor(self):
        from hf_vl.regions import RegionProcessor

        return RegionProcessor(self.tokenizer)  # the default grid extractor: regions from raw images

    @staticmethod
    def regions(num_regions: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """Valid precomputed regions of one image: features (N, 8) and boxes (N, 4) with x1 <= x2, y1 <= y2."""
        rng = np.random.default_rng(1)
        corners = np.sort(rng.uniform(size=(num_regions, 2, 2)), axis=-1)  # [[x1, x2], [y1, y2]] sorted
        boxes = np.stack([corners[:, 0, 0], corners[:, 1, 0], corners[:, 0, 1], corners[:, 1, 1]], -1)
        return rng.normal(size=(num_regions, 8)).astype(np.float32), boxes.astype(np.float32)

    # --- converter -------------------------------------------------------------------------------------------------
    @cached_property
    def converter(self):
        name = "convert_meter_original_to_hf"
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, CONVERTER)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        return sys.modules[name]

    @cached_property
    def original_state_dict(self) -> dict:
        return self.converter.load_original_checkpoint(ORIGINAL_CHECKPOINT)

    def file(self, name: str, content: bytes) -> Path:
        path = self.root / "files" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)
        return path

    def saved(self, name: str, value: Any) -> Path:
        path = self.root / "files" / name
        path.parent.mkdir(exist_ok=True)
        torch.save(value, path)
        return path


def _blank(width: int, height: int, mode: str = "RGB") -> PIL.Image.Image:
    return PIL.Image.new(mode, (width, height))


def _without(state_dict: dict, fragment: str) -> dict:
    return {key: value for key, value in state_dict.items() if fragment not in key}


# ------------------------------------------------------------------------------------------------------ processor

PROCESSOR_CASES = [
    BadInput("processor: text longer than the position table, truncation off",
             lambda x: x.processor(text="word " * 600, truncation=False, return_tensors="pt"),
             ValueError, r"`text` gives sequences of 602 tokens, more than the tokenizer's `model_max_length` \(512\)"),
    BadInput("processor: max_length beyond the position table",
             lambda x: x.processor(text="a red circle", max_length=5000, return_tensors="pt"),
             ValueError, r"`text` gives sequences of 5000 tokens.*`max_length` <= 512"),
    BadInput("processor: max_text_len beyond the position table",
             lambda x: MeterProcessor(MeterImageProcessor(), x.tokenizer, max_text_len=1000),
             ValueError, r"`max_text_len` \(1000\) exceeds the tokenizer's `model_max_length` \(512\)"),
    BadInput("processor: empty text",
             lambda x: x.processor(images=x.image, text=""),
             ValueError, r"`text` must be a non-empty string; got ''"),
    BadInput("processor: blank text in a list",
             lambda x: x.processor(images=[x.image, x.image], text=["a red circle", "   "]),
             ValueError, r"`text\[1\]` must be a non-empty string; got '   '"),
    BadInput("processor: text that is not a string",
             lambda x: x.processor(text=["a red circle", None]),
             TypeError, r"`text\[1\]` must be a string; got NoneType"),
    BadInput("processor: fewer texts than images",
             lambda x: x.processor(images=[x.image] * 3, text=["a", "b"]),
             ValueError, r"`text` and `images`.*2 text\(s\) and 3 image example\(s\)"),
    BadInput("processor: None among the images",
             lambda x: x.processor(images=[x.image, None], text=["a", "b"]),
             TypeError, r"`images\[1\]` must be a PIL image, a path/URL.*got NoneType"),
    BadInput("processor: 0-pixel-wide image",
             lambda x: x.processor(images=_blank(0, 10), text="a"),
             ValueError, r"`images` has no pixels: got PIL image of size 0x10"),
    BadInput("processor: NLVR2 pairs of different sizes",
             lambda x: x.processor(images=[[x.image, x.image], [x.image]], text=["a", "b"]),
             ValueError, r"Every entry of `images` must hold the same non-zero number of images.*\[2, 1\]"),
]

# ------------------------------------------------------------------------------------------------ image processor

IMAGE_PROCESSOR_CASES = [
    BadInput("image processor: 0-pixel-wide PIL image",
             lambda x: x.image_processor(_blank(0, 16)),
             ValueError, r"`images` has no pixels: got PIL image of size 0x16"),
    BadInput("image processor: 0-pixel-high array in a batch",
             lambda x: x.image_processor([np.zeros((8, 8, 3), np.uint8), np.zeros((0, 8, 3), np.uint8)]),
             ValueError, r"`images\[1\]` has no pixels: got ndarray of shape \(0, 8, 3\)"),
    BadInput("image processor: +inf pixels in a tensor",
             lambda x: x.image_processor(torch.full((3, 16, 16), float("inf"))),
             ValueError, r"`images` contains 768 NaN or infinite pixel values"),
    BadInput("image processor: NaN pixels in a bfloat16 tensor",
             lambda x: x.image_processor([x.image, torch.full((3, 8, 8), float("nan"), dtype=torch.bfloat16)]),
             ValueError, r"`images\[1\]` contains 192 NaN or infinite pixel values"),
    BadInput("image processor: 16-bit data as a float array",
             lambda x: x.image_processor(np.full((8, 8, 3), 40000.0, np.float32)),
             ValueError, r"`images` holds float pixel values up to 40000, above the \[0, 255\] range"),
    BadInput("image processor: 16-bit data as a uint16 array",
             lambda x: x.image_processor(np.full((8, 8, 3), 40000, np.uint16)),
             ValueError, r"`images` integer arrays must hold 8-bit values in \[0, 255\]; got \[40000, 40000\]"),
    BadInput("image processor: 32-bit integer PIL image outside 16 bits",
             lambda x: x.image_processor(PIL.Image.fromarray(np.full((8, 8), -5, np.int32))),
             ValueError, r"`images` is a PIL image in mode 'I' with values in \[-5, -5\].*\[0, 65535\]"),
    BadInput("image processor: float PIL image (mode F)",
             lambda x: x.image_processor([x.image, _blank(8, 8, "F")]),
             ValueError, r"`images\[1\]` is a PIL image in mode 'F', which has no agreed RGB meaning"),
    BadInput("image processor: 2 channels",
             lambda x: x.image_processor(np.zeros((8, 8, 2), np.uint8)),
             ValueError, r"`images` arrays must have 1, 3 or 4 channels.*\(8, 8, 2\)"),
    BadInput("image processor: 5 channels, channels first",
             lambda x: x.image_processor(torch.zeros(5, 8, 8)),
             ValueError, r"`images` arrays must have 1, 3 or 4 channels.*\(5, 8, 8\)"),
    BadInput("image processor: RGBA without RGB conversion",
             lambda x: MeterImageProcessor(do_convert_rgb=False)(_blank(8, 8, "RGBA")),
             ValueError, r"`images` must be RGB when `do_convert_rgb=False`; got a PIL image in mode 'RGBA'"),
    BadInput("image processor: boolean pixels",
             lambda x: x.image_processor(np.zeros((8, 8, 3), bool)),
             TypeError, r"`images` arrays must hold integer or float pixel values; got dtype bool"),
    BadInput("image processor: a 1-D array",
             lambda x: x.image_processor(np.zeros(8, np.uint8)),
             ValueError, r"`images` must be one image of shape \(H, W\), \(H, W, C\) or \(C, H, W\); got ndarray"),
    BadInput("image processor: a dict among the images",
             lambda x: x.image_processor([{"image": x.image}]),
             TypeError, r"`images\[0\]` must be a PIL image, a path/URL.*got dict"),
    BadInput("image processor: empty list",
             lambda x: x.image_processor([]),
             ValueError, r"`images` is empty: pass at least one image"),
]

# ------------------------------------------------------------------------------------------------------ pipelines

PIPELINE_CASES = [
    BadInput("vqa pipeline: checkpoint without a VQA head (pre-training)",
             lambda x: x.pipeline("vl-question-answering", "pretraining"),
             ValueError, r"`model` is a MeterForQuestionAnswering loaded from a checkpoint saved as "
                         r"\['MeterForPreTraining'\], which has no question answering head"),
    BadInput("vqa pipeline: checkpoint without a VQA head (retrieval)",
             lambda x: x.pipeline("vl-question-answering", "retrieval"),
             ValueError, r"saved as \['MeterForImageAndTextRetrieval'\], which has no question answering head"),
    BadInput("vqa pipeline: image smaller than one patch",
             lambda x: x.pipeline("vl-question-answering", "vqa",
                                  processor=x.processor_with(do_resize=False, do_center_crop=False))(
                 image=_blank(4, 4), question="what color is it?"),
             ValueError, r"`image` is 4x4 pixels \(height x width\) once processed, smaller than one 8x8 patch"),
    BadInput("vqa pipeline: question longer than the position table",
             lambda x: x.pipeline("vl-question-answering", "vqa", processor=x.processor_with(max_text_len=100))(
                 image=x.image, question="word " * 90),
             ValueError, r"`question` is 100 tokens long once processed, but the text tower.*has 64 positions"),
    BadInput("vqa pipeline: 0-pixel-wide image",
             lambda x: x.vqa(image=_blank(0, 5), question="what color is it?"),
             ValueError, r"`image` has no pixels: got PIL image of size 0x5"),
    BadInput("vqa pipeline: empty question",
             lambda x: x.vqa(image=x.image, question="  "),
             ValueError, r"`question` must be a non-empty string"),
    BadInput("vqa pipeline: top_k=0",
             lambda x: x.vqa(image=x.image, question="what color is it?", top_k=0),
             ValueError, r"`top_k` must be a positive int or None; got 0"),
    BadInput("zero-shot pipeline: duplicate labels",
             lambda x: x.zero_shot(x.image, candidate_labels=["circle", "square", "circle"]),
             ValueError, r"`candidate_labels` must not repeat a candidate: `candidate_labels\[0\]` = 'circle' and "
                         r"`candidate_labels\[2\]` = 'circle'"),
    BadInput("zero-shot pipeline: labels equal up to case and spaces",
             lambda x: x.zero_shot(x.image, candidate_labels="red  circle, Red circle"),
             ValueError, r"`candidate_labels\[0\]` = 'red  circle' and `candidate_labels\[1\]` = 'Red circle'"),
    BadInput("zero-shot pipeline: empty candidate list",
             lambda x: x.zero_shot(x.image, candidate_labels=[]),
             ValueError, r"`candidate_labels` is empty: the itm-zero-shot-image-classification pipeline needs"),
    BadInput("zero-shot pipeline: template without a slot",
             lambda x: x.zero_shot(x.image, candidate_labels=["circle"], hypothesis_template="a photo"),
             ValueError, r"`hypothesis_template` must contain a `\{\}` slot"),
    BadInput("retrieval pipeline: empty candidate texts",
             lambda x: x.retrieval(x.image, candidate_texts=[]),
             ValueError, r"`candidate_texts` is empty: the image-text-retrieval pipeline needs"),
    BadInput("retrieval pipeline: empty candidate images",
             lambda x: x.retrieval(text="a red circle", candidate_images=[]),
             ValueError, r"`candidate_images` is empty: pass at least one image"),
    BadInput("retrieval pipeline: a 0-pixel candidate image",
             lambda x: x.retrieval(text="a red circle", candidate_images=[x.image, _blank(7, 0)]),
             ValueError, r"`candidate_images\[1\]` has no pixels: got PIL image of size 7x0"),
    BadInput("retrieval pipeline: texts padded beyond the position table",
             lambda x: x.pipeline("image-text-retrieval", "retrieval", processor=x.processor_with(max_text_len=100))(
                 x.image, candidate_texts=["a red circle", "a blue square"]),
             ValueError, r"`candidate_texts\[0\]` is 100 tokens long once processed.*has 64 positions"),
]

# -------------------------------------------------------------------------------------------------------- regions


def _inverted_regions():
    feats, boxes = Inputs.regions()
    boxes[1] = [0.6, 0.2, 0.3, 0.9]  # x2 < x1
    return feats, boxes


REGION_CASES = [
    BadInput("region processor: inverted box (x2 < x1)",
             lambda x: x.region_processor(text="what is it?", visual_feats=_inverted_regions()[0],
                                          visual_pos=_inverted_regions()[1]),
             ValueError, r"visual_pos must hold boxes .*x1 <= x2 and y1 <= y2, got \[0.6, 0.2, 0.3, 0.9\] at "
                         r"\(batch, region\) \(0, 1\)"),
    BadInput("region validator: inverted box (y2 < y1)",
             lambda x: validate_region_inputs(np.zeros((1, 2, 8)), np.array([[[0, 0, 1, 1], [0.1, 0.8, 0.5, 0.3]]])),
             ValueError, r"visual_pos must hold boxes .*got \[0.1, 0.8, 0.5, 0.3\] at \(batch, region\) \(0, 1\)"),
    BadInput("boxes_to_visual_pos: inverted box",
             lambda x: boxes_to_visual_pos(np.array([[0.5, 0.5, 0.1, 0.9]])),
             ValueError, r"boxes\[0\] = \[0.5, 0.5, 0.1, 0.9\] has x2 < x1 or y2 < y1"),
    BadInput("region processor: boxes outside [0, 1]",
             lambda x: x.region_processor(text="what is it?", visual_feats=Inputs.regions()[0],
                                          visual_pos=Inputs.regions()[1] * 640),
             ValueError, r"visual_pos must hold boxes normalised to \[0, 1\]"),
    BadInput("region processor: NaN region features",
             lambda x: x.region_processor(text="what is it?", visual_feats=np.full((3, 8), np.nan, np.float32),
                                          visual_pos=Inputs.regions()[1]),
             ValueError, r"visual_feats contains NaN or inf \(first at \(batch, region, dim\) \(0, 0, 0\)\)"),
    BadInput("region processor: NaN features in a per-image list",
             lambda x: x.region_processor(text=["a?", "b?"],
                                          visual_feats=[Inputs.regions()[0], np.full((2, 8), np.inf, np.float32)],
                                          visual_pos=[Inputs.regions()[1], Inputs.regions(2)[1]]),
             ValueError, r"visual_feats contains NaN or inf \(first at \(batch, region, dim\) \(1, 0, 0\)\)"),
    BadInput("region processor: attention mask holding 2s",
             lambda x: x.region_processor(text="what is it?", visual_feats=Inputs.regions()[0],
                                          visual_pos=Inputs.regions()[1], visual_attention_mask=np.full(3, 2)),
             ValueError, r"visual_attention_mask must hold 0 \(padding\) or 1"),
    BadInput("region processor: empty text",
             lambda x: x.region_processor(text="", visual_feats=Inputs.regions()[0], visual_pos=Inputs.regions()[1]),
             ValueError, r"`text` must be a non-empty string; got ''"),
    BadInput("region processor: 0-pixel-wide image",
             lambda x: x.grid_region_processor(text="what is it?", images=_blank(0, 32)),
             ValueError, r"`images` has no pixels: got PIL image of size 0x32"),
    BadInput("region processor: float PIL image (mode F)",
             lambda x: x.grid_region_processor(text="what is it?", images=_blank(8, 8, "F")),
             ValueError, r"`images` is a PIL image in mode 'F', which has no agreed RGB meaning"),
    BadInput("normalize_boxes: inverted pixel box",
             lambda x: normalize_boxes(np.array([[300.0, 10.0, 100.0, 50.0]]), image_width=640, image_height=480),
             ValueError, r"boxes\[0\] = \[300, 10, 100, 50\] has x2 < x1 or y2 < y1"),
]

# --------------------------------------------------------------------------------------------------------- config

CONFIG_CASES = [
    BadInput("config: num_labels=0", lambda x: tiny_meter_config(num_labels=0),
             ValueError, r"`num_labels` must be a positive int .*got 0"),
    BadInput("config: negative num_labels", lambda x: tiny_meter_config(num_labels=-3),
             ValueError, r"`num_labels` must be a positive int .*got -3"),
    BadInput("config: empty id2label", lambda x: tiny_meter_config(id2label={}),
             ValueError, r"`id2label` must name at least one class"),
    BadInput("config: num_attention_heads=0", lambda x: MeterConfig(num_attention_heads=0),
             ValueError, r"`num_attention_heads` must be an int >= 1, got 0"),
    BadInput("config: hidden_size not divisible by the heads", lambda x: MeterConfig(hidden_size=770),
             ValueError, r"`hidden_size` \(770\) must be a multiple of `num_attention_heads` \(12\)"),
    BadInput("config: hidden_size as a string", lambda x: MeterConfig(hidden_size="768"),
             ValueError, r"`hidden_size` must be an int >= 1, got '768'"),
    BadInput("config: intermediate_size=0", lambda x: MeterConfig(intermediate_size=0),
             ValueError, r"`intermediate_size` must be an int >= 1, got 0"),
    BadInput("config: misspelt hidden_act", lambda x: MeterConfig(hidden_act="gleu"),
             ValueError, r"`hidden_act` must name a transformers activation .*got 'gleu'"),
    BadInput("config: unknown fusion_type", lambda x: MeterConfig(fusion_type="coattention"),
             ValueError, r"`fusion_type` must be 'co_attention' or 'merged_attention', got 'coattention'"),
    BadInput("config: NaN dropout", lambda x: MeterConfig(hidden_dropout_prob=float("nan")),
             ValueError, r"`hidden_dropout_prob` must be a float in \[0, 1\], got nan"),
    BadInput("config: layer_norm_eps=0", lambda x: MeterConfig(layer_norm_eps=0.0),
             ValueError, r"`layer_norm_eps` must be a float in \(0, inf\), got 0.0"),
    BadInput("config: text_config as a model name", lambda x: MeterConfig(text_config="roberta"),
             TypeError, r"`text_config` must be a dict or a PreTrainedConfig .*got str 'roberta'"),
]

# ------------------------------------------------------------------------------------------------------ converter

CONVERTER_CASES = [
    BadInput("converter: empty checkpoint file",
             lambda x: x.converter.load_original_checkpoint(x.file("empty.ckpt", b"")),
             ValueError, r"empty\.ckpt is empty \(0 bytes\)"),
    BadInput("converter: truncated checkpoint file",
             lambda x: x.converter.load_original_checkpoint(
                 x.file("truncated.ckpt", ORIGINAL_CHECKPOINT.read_bytes()[:50_000])),
             ValueError, r"truncated\.ckpt is not a readable PyTorch checkpoint: it is truncated, corrupt"),
    BadInput("converter: a text file as checkpoint",
             lambda x: x.converter.load_original_checkpoint(x.file("notes.ckpt", b"not a checkpoint\n")),
             ValueError, r"notes\.ckpt is not a readable PyTorch checkpoint"),
    BadInput("converter: checkpoint without METER's keys",
             lambda x: x.converter.load_original_checkpoint(
                 x.saved("keyless.ckpt", {"state_dict": {"encoder.weight": torch.zeros(2, 2)}})),
             ValueError, r"keyless\.ckpt is not a METER checkpoint: none of its 1 tensors is under "
                         r"\['text_transformer\.', 'vit_model\.', 'cross_modal_'\]"),
    BadInput("converter: checkpoint missing a tensor the conversion needs",
             lambda x: x.converter.convert_state_dict(_without(x.original_state_dict, "visual.conv1"),
                                                      source="meter_clip.ckpt"),
             ValueError, r"meter_clip\.ckpt has no tensor 'vit_model\.visual\.conv1\.weight', which the conversion "
                         r"needs"),
    BadInput("converter: command line on a truncated checkpoint",
             lambda x: x.converter.main([
                 "--checkpoint-path", str(x.file("cut.ckpt", ORIGINAL_CHECKPOINT.read_bytes()[:1000])),
                 "--output-dir", str(x.root / "converted")]),
             ValueError, r"cut\.ckpt is not a readable PyTorch checkpoint"),
    BadInput("converter: command line on a checkpoint missing a tensor",
             lambda x: x.converter.main([
                 "--checkpoint-path", str(x.saved("no_text_embeddings.ckpt",
                                                  _without(x.original_state_dict, "token_type_embeddings"))),
                 "--output-dir", str(x.root / "converted")]),
             ValueError, r"no_text_embeddings\.ckpt has no tensor 'text_transformer\.embeddings\."
                         r"token_type_embeddings\.weight'"),
    BadInput("converter: missing checkpoint file",
             lambda x: x.converter.load_original_checkpoint(x.root / "files" / "nowhere.ckpt"),
             FileNotFoundError, r"nowhere\.ckpt"),
    BadInput("converter: answer vocabulary that is not JSON",
             lambda x: x.converter.read_answer_vocab(x.file("answers.json", b"yes\nno\n")),
             ValueError, r"answers\.json is not valid JSON"),
]


# -------------------------------------------------------------------------------------------------- the catalogue

CASES: list[BadInput] = [
    *PROCESSOR_CASES,
    *IMAGE_PROCESSOR_CASES,
    *PIPELINE_CASES,
    *REGION_CASES,
    *CONFIG_CASES,
    *CONVERTER_CASES,
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny models run faster on one thread on a shared CPU
    yield Inputs(tmp_path_factory.mktemp("bad_inputs"))
    torch.set_num_threads(previous)


def test_catalogue_is_complete():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names)), "case names must be unique (they are the test ids)"
    assert len(CASES) >= 35
    assert {case.error for case in CASES} <= {ValueError, TypeError, FileNotFoundError}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_raises_a_clear_error(case, inputs):
    with pytest.raises(case.error, match=case.match) as raised:
        case.call(inputs)
    # exactly the documented type: not a subclass raised deep inside a library (e.g. json.JSONDecodeError)
    assert type(raised.value) is case.error
