"""Optimiser helpers: METER's larger learning rate for randomly initialised parameters.

METER (Sec. 4.2, "optimization") trains the pretrained towers with a small learning rate and the randomly
initialised fusion layers and heads with a learning rate 5x larger. `vl_parameter_groups` builds those groups
for any hf_vl model (the pretrained parameters are the ones the base model reports through
`pretrained_parameter_names()`), with the usual "no weight decay on biases and LayerNorm" split.
Pass the result to the `Trainer` through `optimizers=(create_vl_optimizer(...), None)`.
"""

from collections.abc import Iterable

import torch
from torch import nn


def pretrained_parameter_names(model: nn.Module) -> set[str]:
    """Full names (as in `model.named_parameters()`) of the parameters that come from pretrained towers."""
    base = getattr(model, "base_model", model)
    if not hasattr(base, "pretrained_parameter_names"):
        raise TypeError(
            f"{type(base).__name__} does not report its pretrained parameters (`pretrained_parameter_names()`); pass "
            "`pretrained_names=` explicitly."
        )
    prefix = "" if base is model else f"{model.base_model_prefix}."
    return {prefix + name for name in base.pretrained_parameter_names()}


def _no_decay(name: str, param: torch.Tensor) -> bool:
    return param.dim() < 2 or "LayerNorm" in name or "layer_norm" in name or name.endswith(".bias")


def vl_parameter_groups(
    model: nn.Module,
    learning_rate: float,
    new_parameters_lr_multiplier: float = 5.0,
    weight_decay: float = 0.01,
    pretrained_names: Iterable[str] | None = None,
) -> list[dict]:
    """Parameter groups: pretrained vs new parameters (lr x `new_parameters_lr_multiplier`), each split into decay /
    no decay. Frozen parameters are left out. Empty groups are dropped.

    Example:

    ```python
    >>> groups = vl_parameter_groups(model, learning_rate=1e-5, new_parameters_lr_multiplier=5.0)
    >>> optimizer = torch.optim.AdamW(groups)
    ```
    """
    if learning_rate <= 0:
        raise ValueError(f"`learning_rate` must be > 0, got {learning_rate}.")
    if new_parameters_lr_multiplier <= 0:
        raise ValueError(f"`new_parameters_lr_multiplier` must be > 0, got {new_parameters_lr_multiplier}.")
    pretrained = set(pretrained_names) if pretrained_names is not None else pretrained_parameter_names(model)
    groups: dict[tuple[bool, bool], list[torch.Tensor]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((name in pretrained, _no_decay(name, param)), []).append(param)
    result = []
    for (is_pretrained, no_decay), params in sorted(groups.items()):
        result.append(
            {
                "params": params,
                "lr": learning_rate if is_pretrained else learning_rate * new_parameters_lr_multiplier,
                "weight_decay": 0.0 if no_decay else weight_decay,
                "name": f"{'pretrained' if is_pretrained else 'new'}{'_no_decay' if no_decay else ''}",
            }
        )
    return result


# devices with a fused AdamW kernel in every supported torch (one kernel per step instead of one per tensor)
_FUSED_ADAMW_DEVICES = ("cpu", "cuda", "xpu")


def create_vl_optimizer(
    model: nn.Module,
    learning_rate: float,
    new_parameters_lr_multiplier: float = 5.0,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-8,
    pretrained_names: Iterable[str] | None = None,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over `vl_parameter_groups` (METER's betas (0.9, 0.98)); hand it to the Trainer as
    `Trainer(..., optimizers=(optimizer, None))` and the Trainer adds its scheduler.

    `fused=None` picks torch's fused AdamW kernel when every trainable parameter is a floating-point tensor on a
    device that has one (CPU, CUDA, XPU), as the Trainer's default `adamw_torch_fused` does: on CPU plain
    `torch.optim.AdamW` falls back to its per-tensor loop, several times slower per step for a small model.
    `fused=False` keeps torch's default choice."""
    groups = vl_parameter_groups(model, learning_rate, new_parameters_lr_multiplier, weight_decay, pretrained_names)
    if fused is None:
        fused = all(
            param.device.type in _FUSED_ADAMW_DEVICES and torch.is_floating_point(param)
            for group in groups
            for param in group["params"]
        )
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps, fused=fused or None)
