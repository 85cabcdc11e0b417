"""Trainer callbacks for Adaptive LXMERT's learned attention structure.

- [`AdaptiveLxmertClampCallback`]: after every optimiser step, clamp the learned spans to [0, 1] and the entmax alphas
  to [1.01, 2] (Sukhbaatar et al. 2019 clamp the span parameter after each update; Correia et al. 2019 keep alpha
  in [1.01, 2]).
- [`AdaptiveLxmertStructureCallback`]: record the learned spans (per layer and head) and alphas over training,
  written to a JSON file at the end (the data behind the paper's span-per-layer and alpha-per-head figures), and
  drawn to PNG by [`plot_adaptive_structure`] (heatmaps of the final values, curves of the per-module means; a
  dependency-free PNG writer, no matplotlib needed).

Both work with any model exposing `clamp_adaptive_parameters` / `learned_spans` / `learned_alphas` (every
`AdaptiveLxmert*` class); on other models they do nothing.
"""

import json
import os
import struct
import zlib

import numpy as np
from transformers import TrainerCallback

# distinct curve colours (RGB)
_PALETTE = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75],
                     [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]], dtype=np.uint8)


def _write_png(path: str, image: np.ndarray) -> None:
    """Writes an `(H, W, 3)` uint8 image as an 8-bit RGB PNG."""
    height, width, _ = image.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(image, dtype=np.uint8))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
                     + chunk(b"IEND", b""))


def _heatmap(values: np.ndarray, low: float, high: float, cell: int = 20) -> np.ndarray:
    """Rows x columns values -> blocks coloured dark blue (`low`) -> teal -> yellow (`high`), viridis-like."""
    scaled = np.clip((values - low) / max(high - low, 1e-12), 0.0, 1.0)
    stops = np.array([[68, 1, 84], [33, 145, 140], [253, 231, 37]], dtype=float)
    colours = np.stack([np.interp(scaled, [0.0, 0.5, 1.0], stops[:, channel]) for channel in range(3)], axis=-1)
    return np.repeat(np.repeat(colours.astype(np.uint8), cell, axis=0), cell, axis=1)


def _curves(series: np.ndarray, low: float, high: float, width: int = 480, height: int = 240) -> np.ndarray:
    """`(num_curves, num_points)` values -> polylines on a white canvas (y from `low` at the bottom to `high`)."""
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    canvas[[0, -1], :] = 0  # frame
    canvas[:, [0, -1]] = 0
    num_points = series.shape[1]
    xs = np.linspace(4, width - 5, max(num_points, 2))
    for index, values in enumerate(series):
        ys = (height - 5) - np.clip((values - low) / max(high - low, 1e-12), 0, 1) * (height - 10)
        if num_points == 1:
            xs_line, ys_line = xs[:1], ys
        else:
            steps = int(width * 2)
            xs_line = np.interp(np.linspace(0, num_points - 1, steps), np.arange(num_points), xs[:num_points])
            ys_line = np.interp(np.linspace(0, num_points - 1, steps), np.arange(num_points), ys)
        colour = _PALETTE[index % len(_PALETTE)]
        for dy in (-1, 0, 1):
            rows = np.clip(np.round(ys_line).astype(int) + dy, 0, height - 1)
            canvas[rows, np.round(xs_line).astype(int)] = colour
    return canvas


def plot_adaptive_structure(history: list[dict], output_dir: str) -> list[str]:
    """Draws the records of [`AdaptiveLxmertStructureCallback`] to PNG files in `output_dir`:
    `spans_heatmap.png` / `alphas_heatmap.png` (final value per attention module (row, in model order) and head
    (column); spans 0 -> 1, alphas 1 -> 2 from dark blue to yellow) and `spans_over_training.png` /
    `alphas_over_training.png` (mean over heads of each module across the records, one colour per module).
    Returns the written paths (none for a mechanism the model does not use)."""
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for key, low, high in (("spans", 0.0, 1.0), ("alphas", 1.0, 2.0)):
        if not history or not history[-1][key]:
            continue
        names = list(history[-1][key])
        final = np.array([history[-1][key][name] for name in names], dtype=float)  # (modules, heads)
        path = os.path.join(output_dir, f"{key}_heatmap.png")
        _write_png(path, _heatmap(final, low, high))
        written.append(path)
        means = np.array([[np.mean(record[key][name]) for record in history] for name in names])  # (modules, records)
        path = os.path.join(output_dir, f"{key}_over_training.png")
        _write_png(path, _curves(means, low, high))
        written.append(path)
    return written


def _unwrap(model):
    """The model under DataParallel / DDP / accelerate wrappers."""
    while hasattr(model, "module") and not hasattr(model, "clamp_adaptive_parameters"):
        model = model.module
    return model


class AdaptiveLxmertClampCallback(TrainerCallback):
    """Clamps spans and alphas to their valid ranges after each optimiser step.

    Example:

    ```python
    >>> trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[AdaptiveLxmertClampCallback()])
    ```
    """

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model = _unwrap(model) if model is not None else None
        if model is not None and hasattr(model, "clamp_adaptive_parameters"):
            model.clamp_adaptive_parameters()


class AdaptiveLxmertStructureCallback(TrainerCallback):
    """Records `{step, spans, alphas}` every `every_n_steps` optimiser steps and at the end of training.

    Args:
        output_file (`str`, *optional*): JSON file written at the end of training (default:
            `<output_dir>/adaptive_structure.json`).
        every_n_steps (`int`, defaults to 10).
        plot (`bool`, defaults to `True`): also draw the PNG figures of [`plot_adaptive_structure`] next to the JSON.

    The history is also available as `callback.history` (a list of dicts of lists, one per record).
    """

    def __init__(self, output_file: str | None = None, every_n_steps: int = 10, plot: bool = True):
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"`every_n_steps` must be a positive int, got {every_n_steps!r}.")
        self.output_file = output_file
        self.every_n_steps = every_n_steps
        self.plot = plot
        self.history: list[dict] = []

    def _record(self, step, model):
        model = _unwrap(model)
        if not hasattr(model, "learned_spans"):
            return
        self.history.append({
            "step": int(step),
            "spans": {name: value.tolist() for name, value in model.learned_spans().items()},
            "alphas": {name: value.tolist() for name, value in model.learned_alphas().items()},
        })

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self._record(state.global_step, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None and state.global_step % self.every_n_steps == 0:
            self._record(state.global_step, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if model is not None and (not self.history or self.history[-1]["step"] != state.global_step):
            self._record(state.global_step, model)
        path = self.output_file or os.path.join(args.output_dir, "adaptive_structure.json")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as handle:
            json.dump(self.history, handle)
        if self.plot:
            plot_adaptive_structure(self.history, os.path.dirname(os.path.abspath(path)))


__all__ = ["AdaptiveLxmertClampCallback", "AdaptiveLxmertStructureCallback", "plot_adaptive_structure"]
