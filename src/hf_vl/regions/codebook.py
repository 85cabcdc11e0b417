"""Region classes without a detector: a k-means codebook over region features.

Masked region modelling (InterBERT's MRM, UNITER / Switch-BERT's MRC-KL) predicts, for every masked region, the
object class a detector gave it, or the detector's whole class distribution. Grid regions
(:class:`~hf_vl.regions.GridFeatureExtractor`) and backbone features have no detector behind them; a
:class:`RegionCodebook` gives them classes the same way a visual vocabulary does: k-means over the (standardised)
region features of a training set, then

- :meth:`RegionCodebook.assign`: the nearest centroid of every region, the class id (``-100`` for padded regions);
- :meth:`RegionCodebook.distribution`: a softmax over negative squared distances, a soft class distribution shaped
  like a detector's ``cls_prob`` (the KL-divergence target).

The codebook is a small ``nn.Module`` (centroids, feature mean and std as buffers) saved with
:meth:`save_pretrained` next to a model or a region processor, so the targets of a later run are the same.

Example:
    >>> features = torch.randn(500, 31)
    >>> codebook = RegionCodebook.fit(features, num_classes=8, seed=0)
    >>> codebook.assign(features[:4]).shape, codebook.distribution(torch.randn(2, 16, 31)).shape
    (torch.Size([4]), torch.Size([2, 16, 8]))
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["RegionCodebook"]

CODEBOOK_CONFIG_NAME = "region_codebook.json"
CODEBOOK_WEIGHTS_NAME = "region_codebook.safetensors"


def _as_features(features: Any, name: str) -> torch.Tensor:
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    if not isinstance(features, torch.Tensor) or not features.is_floating_point() or features.dim() < 2:
        raise ValueError(
            f"`{name}` must be a float tensor or array (..., feature_dim), got "
            f"{tuple(features.shape) if hasattr(features, 'shape') else type(features).__name__}."
        )
    if not bool(torch.isfinite(features).all()):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return features.float()


class RegionCodebook(nn.Module):
    """``num_classes`` centroids over standardised region features; see the module docstring.

    Args:
        centroids: ``(num_classes, feature_dim)`` in standardised units.
        mean, std: ``(feature_dim,)`` standardisation of the features (``(x - mean) / std``).
        temperature: softmax temperature of :meth:`distribution`, in units of the mean squared distance of the
            training features to their centroid (1.0: a region at the typical distance of its centroid keeps most
            of the mass on it; smaller is sharper).
    """

    def __init__(self, centroids: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, temperature: float = 1.0,
                 scale: float = 1.0):  # fmt: skip
        super().__init__()
        if centroids.dim() != 2 or mean.shape != (centroids.shape[1],) or std.shape != mean.shape:
            raise ValueError(
                f"`centroids` (num_classes, D), `mean` and `std` (D,) expected, got {tuple(centroids.shape)}, "
                f"{tuple(mean.shape)}, {tuple(std.shape)}."
            )
        if not float(temperature) > 0 or not float(scale) > 0:
            raise ValueError(f"`temperature` and `scale` must be positive, got {temperature!r}, {scale!r}.")
        self.register_buffer("centroids", centroids.float().clone())
        self.register_buffer("mean", mean.float().clone())
        self.register_buffer("std", std.float().clone())
        self.temperature = float(temperature)
        self.scale = float(scale)  # the mean squared distance to the assigned centroid on the training features

    @property
    def num_classes(self) -> int:
        return self.centroids.shape[0]

    @property
    def feature_dim(self) -> int:
        return self.centroids.shape[1]

    @classmethod
    def fit(
        cls,
        features: Any,
        num_classes: int,
        num_iterations: int = 25,
        seed: int = 0,
        temperature: float = 1.0,
        max_samples: int | None = 100_000,
    ) -> RegionCodebook:
        """k-means (k-means++ seeding, Lloyd iterations) on ``features (..., D)`` (every row a region: drop padded
        regions first). ``max_samples`` rows, drawn with ``seed``, are used when there are more."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an int >= 2, got {num_classes!r}.")
        rows = _as_features(features, "features")
        rows = rows.reshape(-1, rows.shape[-1])
        if rows.shape[0] < num_classes:
            raise ValueError(f"k-means with {num_classes} classes needs at least as many regions, got {rows.shape[0]}.")
        generator = torch.Generator().manual_seed(seed)
        if max_samples is not None and rows.shape[0] > max_samples:
            rows = rows[torch.randperm(rows.shape[0], generator=generator)[:max_samples]]
        mean = rows.mean(0)
        std = rows.std(0).clamp(min=1e-6)
        data = (rows - mean) / std
        # k-means++: each next centroid drawn with probability proportional to the squared distance to the chosen
        centroids = data[torch.randint(data.shape[0], (1,), generator=generator)]
        closest = torch.cdist(data, centroids).pow(2).squeeze(1)
        for _ in range(1, num_classes):
            weights = closest / closest.sum() if float(closest.sum()) > 0 else torch.full_like(closest, 1.0)
            chosen = torch.multinomial(weights, 1, generator=generator)
            centroids = torch.cat([centroids, data[chosen]])
            closest = torch.minimum(closest, torch.cdist(data, data[chosen]).pow(2).squeeze(1))
        for _ in range(num_iterations):
            assignment = torch.cdist(data, centroids).argmin(1)
            sums = torch.zeros_like(centroids).index_add_(0, assignment, data)
            counts = torch.bincount(assignment, minlength=num_classes).to(data.dtype)
            empty = counts == 0
            updated = sums / counts.clamp(min=1)[:, None]
            if bool(empty.any()):  # an empty cluster restarts at the point farthest from its centroid
                distance = torch.cdist(data, updated).min(1).values
                updated[empty] = data[distance.topk(int(empty.sum())).indices]
            if torch.allclose(updated, centroids):
                centroids = updated
                break
            centroids = updated
        distances = torch.cdist(data, centroids).pow(2)
        scale = float(distances.min(1).values.mean().clamp(min=1e-6))
        return cls(centroids, mean, std, temperature=temperature, scale=scale)

    def _squared_distances(self, visual_feats: Any) -> torch.Tensor:
        feats = _as_features(visual_feats, "visual_feats").to(self.centroids.device)
        if feats.shape[-1] != self.feature_dim:
            raise ValueError(
                f"`visual_feats` last dimension must be the codebook's feature_dim {self.feature_dim}, got "
                f"{feats.shape[-1]}."
            )
        data = (feats - self.mean) / self.std
        flat = data.reshape(-1, self.feature_dim)
        return torch.cdist(flat, self.centroids).pow(2).reshape(*data.shape[:-1], self.num_classes)

    @torch.no_grad()
    def assign(self, visual_feats: Any, visual_attention_mask: Any = None) -> torch.Tensor:
        """Class id (nearest centroid) of every region, ``(...)`` long; ``-100`` where the mask is 0."""
        ids = self._squared_distances(visual_feats).argmin(-1)
        if visual_attention_mask is not None:
            ids = ids.masked_fill(~torch.as_tensor(visual_attention_mask, device=ids.device).bool(), -100)
        return ids

    @torch.no_grad()
    def distribution(self, visual_feats: Any, temperature: float | None = None) -> torch.Tensor:
        """Soft class distribution of every region, ``(..., num_classes)``: softmax of ``-d^2 / (T * scale)``."""
        temperature = self.temperature if temperature is None else float(temperature)
        if not temperature > 0:
            raise ValueError(f"`temperature` must be positive, got {temperature!r}.")
        return torch.softmax(-self._squared_distances(visual_feats) / (temperature * self.scale), dim=-1)

    forward = distribution

    def to_dict(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "feature_dim": self.feature_dim, "temperature": self.temperature,
                "scale": self.scale}  # fmt: skip

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        os.makedirs(save_directory, exist_ok=True)
        save_file({name: tensor.contiguous().cpu() for name, tensor in self.state_dict().items()},
                  os.path.join(save_directory, CODEBOOK_WEIGHTS_NAME))  # fmt: skip
        with open(os.path.join(save_directory, CODEBOOK_CONFIG_NAME), "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> RegionCodebook:
        config_path = os.path.join(directory, CODEBOOK_CONFIG_NAME)
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"No {CODEBOOK_CONFIG_NAME} in {str(directory)!r}: save one with save_pretrained.")
        with open(config_path) as f:
            config = json.load(f)
        tensors = load_file(os.path.join(directory, CODEBOOK_WEIGHTS_NAME))
        return cls(tensors["centroids"], tensors["mean"], tensors["std"], temperature=config["temperature"],
                   scale=config["scale"])  # fmt: skip

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, feature_dim={self.feature_dim}, temperature={self.temperature}"
