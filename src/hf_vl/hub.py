"""Publishing hf_vl models with their code: a folder (or Hub repo) that `trust_remote_code` loads without hf_vl.

`save_for_hub` registers the model, config and processor classes for their Auto classes (so `save_pretrained`
copies `modeling_<name>.py`, `configuration_<name>.py`, `processing_<name>.py`, `image_processing_<name>.py`),
writes the FULL `auto_map` (every head, not only the saved class: transformers only records the class that was
saved) and fills the model card template `<model_type>.md` shipped inside the package (`hf_vl/model_cards/`, package
data read with `importlib.resources`, so an installed wheel publishes too).
"""

from __future__ import annotations

import json
import os
import string
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import PreTrainedModel

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


def _code_auto_map(model: PreTrainedModel) -> dict[str, str]:
    from . import MODEL_AUTO_CLASSES

    model_type = model.config.model_type
    if model_type not in MODEL_AUTO_CLASSES:
        raise ValueError(f"No hf_vl Auto classes are registered for model_type {model_type!r}.")
    auto_map = {"AutoConfig": f"{_module_file(type(model.config))}.{type(model.config).__name__}"}
    for auto_class, model_class in MODEL_AUTO_CLASSES[model_type]:
        if auto_class.__module__.startswith("transformers."):  # a fresh process only knows transformers' Auto classes
            auto_map[auto_class.__name__] = f"{_module_file(model_class)}.{model_class.__name__}"
    return auto_map


def _module_file(cls) -> str:
    return cls.__module__.rsplit(".", 1)[-1]


#: Package-data folder of the model card templates (`hf_vl/model_cards/<model_type>.md`).
MODEL_CARDS_PACKAGE_DIR = "model_cards"


def available_model_card_templates() -> list[str]:
    """The model types that have a model card template in the installed package."""
    folder = resources.files("hf_vl").joinpath(MODEL_CARDS_PACKAGE_DIR)
    if not folder.is_dir():
        return []
    names = (entry.name for entry in folder.iterdir() if entry.is_file())
    return sorted(name[: -len(".md")] for name in names if name.endswith(".md"))


def model_card_template_path(model_type: str) -> Traversable:
    """The template `hf_vl/model_cards/<model_type>.md` of the installed package (a `Traversable`: a `Path` for a
    regular install, a zip path when hf_vl is imported from an archive); read it with `.read_text()`."""
    if not isinstance(model_type, str) or not model_type:
        raise TypeError(f"`model_type` must be a non-empty str, got {model_type!r}.")
    template = resources.files("hf_vl").joinpath(MODEL_CARDS_PACKAGE_DIR).joinpath(f"{model_type}.md")
    if not template.is_file():
        raise FileNotFoundError(
            f"No model card template for model_type {model_type!r} in the hf_vl package "
            f"(hf_vl/{MODEL_CARDS_PACKAGE_DIR}/{model_type}.md); templates exist for "
            f"{available_model_card_templates()}."
        )
    return template


def render_model_card(model: PreTrainedModel, template: str | None = None, **fields) -> str:
    """Fills the package template `hf_vl/model_cards/<model_type>.md` (`$name` placeholders, `string.Template`), or
    the template named `template` (e.g. `"meter_generation"`: encoder-decoder METER); a placeholder left without a
    value raises `KeyError`."""
    name = template if template is not None else model.config.model_type
    template = string.Template(model_card_template_path(name).read_text(encoding="utf-8"))
    defaults = {
        "model_class": type(model).__name__,
        "num_parameters": f"{model.num_parameters() / 1e6:.1f}M",
        # two-tower models (METER) name their towers; single-model configs (InterBERT) have no sub-configs
        "text_tower": getattr(getattr(model.config, "text_config", None), "model_type", model.config.model_type),
        "vision_tower": getattr(getattr(model.config, "vision_config", None), "model_type", model.config.model_type),
        "num_labels": str(model.config.num_labels),
    }
    return template.substitute({**defaults, **{k: str(v) for k, v in fields.items()}})


def save_for_hub(model: PreTrainedModel, save_directory: str, processor=None, model_card: str | None = None) -> str:
    """Saves `model` (safetensors), its code, the full `auto_map`, the processor and a README model card.

    The folder then loads in a process that cannot import hf_vl:
    `AutoModelForVisualQuestionAnswering.from_pretrained(save_directory, trust_remote_code=True)`.
    Use `push_to_hub_with_code` to publish it.
    """
    auto_map = _code_auto_map(model)
    type(model.config).register_for_auto_class("AutoConfig")
    # A head without a transformers Auto class (e.g. the region models' retrieval heads: hf_vl's own
    # AutoModelForImageAndTextRetrieval) is registered as "AutoModel" only so that its code is copied; the auto_map
    # written below is the full one, and `config.architectures` names the head.
    model_auto = next((name for name, ref in auto_map.items() if ref.endswith(f".{type(model).__name__}")), "AutoModel")
    type(model).register_for_auto_class(model_auto)
    model.save_pretrained(save_directory, safe_serialization=True)
    config_path = os.path.join(save_directory, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["auto_map"] = auto_map
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    if processor is not None:
        type(processor).register_for_auto_class("AutoProcessor")
        image_processor = getattr(processor, "image_processor", None)
        if image_processor is not None:
            type(image_processor).register_for_auto_class("AutoImageProcessor")
        processor.save_pretrained(save_directory)
    if model_card is not None:
        Path(save_directory, "README.md").write_text(model_card, encoding="utf-8")
    return save_directory


def push_to_hub_with_code(model, repo_id: str, processor=None, model_card: str | None = None, **push_kwargs) -> str:
    """`save_for_hub` into a temporary folder, then uploads the folder to `repo_id`; returns the commit URL."""
    import tempfile

    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        save_for_hub(model, tmp, processor=processor, model_card=model_card)
        api = HfApi(token=push_kwargs.pop("token", None))
        api.create_repo(repo_id, exist_ok=True, private=push_kwargs.pop("private", None))
        info = api.upload_folder(folder_path=tmp, repo_id=repo_id, **push_kwargs)
    return str(info)
