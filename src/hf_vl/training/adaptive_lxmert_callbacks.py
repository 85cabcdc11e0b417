"""Trainer callbacks for Adaptive LXMERT's learned attention structure.

- [`AdaptiveLxmertClampCallback`]: after every optimiser step, clamp the learned spans to [0, 1] and the entmax alphas
  to [1.01, 2] (Sukhbaatar et al. 2019 clamp the span parameter after each update; Correia et al. 2019 keep alpha
  in [1.01, 2]).
- [`AdaptiveLxmertStructureCallback`]: record the learned spans (per layer and head) and alphas over training,
  written to a JSON file at the end (the data behind the paper's span-per-layer and alpha-per-head figures), and
  drawn to PNG by [`plot_adaptive_structure`] (heatmaps of the final values, curves of the per-module means, with
  axes and legends; drawn with Pillow, no matplotlib needed).

Both work with any model exposing `clamp_adaptive_parameters` / `learned_spans` / `learned_alphas` (every
`AdaptiveLxmert*` class); on other models they do nothing.
"""

import json
import os

import numpy as np
from transformers import TrainerCallback

# distinct curve colours (RGB)
_PALETTE = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75],
                     [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]], dtype=np.uint8)


def _short_name(name: str) -> str:
    """`lxmert.encoder.x_layers.0.visual_attention.att` -> `x_layers.0.visual_attention`."""
    for prefix in ("lxmert.encoder.", "encoder."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    for suffix in (".self", ".att"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _viridis(scaled: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> RGB from dark blue (0) through teal to yellow (1), viridis-like."""
    stops = np.array([[68, 1, 84], [33, 145, 140], [253, 231, 37]], dtype=float)
    return np.stack([np.interp(scaled, [0.0, 0.5, 1.0], stops[:, channel]) for channel in range(3)], -1).astype(np.uint8)


def _heatmap_figure(values: np.ndarray, names: list[str], low: float, high: float, title: str, cell: int = 30):
    """Rows (attention modules, labelled) x columns (heads, numbered) coloured by value, with a colour bar."""
    from PIL import Image, ImageDraw

    rows, columns = values.shape
    left, top, bar = 8 + 6 * max(len(_short_name(name)) for name in names) + 8, 52, 60
    width, height = left + columns * cell + bar + 40, top + rows * cell + 30
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 6), title, fill="black")
    colours = _viridis(np.clip((values - low) / max(high - low, 1e-12), 0.0, 1.0))
    for row in range(rows):
        draw.text((8, top + row * cell + cell // 2 - 5), _short_name(names[row]), fill="black")
        for column in range(columns):
            x, y = left + column * cell, top + row * cell
            draw.rectangle([x, y, x + cell - 2, y + cell - 2], fill=tuple(int(c) for c in colours[row, column]))
            draw.text((x + 2, y + cell // 2 - 5), f"{values[row, column]:.2f}",
                      fill="white" if colours[row, column].mean() < 140 else "black")
    for column in range(columns):
        draw.text((left + column * cell + cell // 2 - 3, top - 14), str(column), fill="black")
    draw.text((left, top - 30), "head", fill="black")
    bar_x = left + columns * cell + 20
    for y in range(rows * cell):
        fraction = 1.0 - y / max(rows * cell - 1, 1)
        draw.line([bar_x, top + y, bar_x + 14, top + y], fill=tuple(int(c) for c in _viridis(np.array(fraction))))
    draw.text((bar_x + 18, top - 4), f"{high:g}", fill="black")
    draw.text((bar_x + 18, top + rows * cell - 8), f"{low:g}", fill="black")
    return image


def _curves_figure(series: np.ndarray, names: list[str], steps: list[int], low: float, high: float, title: str,
                   ylabel: str, width: int = 480, height: int = 240):  # fmt: skip
    """`(num_curves, num_points)` values -> one coloured line per curve over the recorded steps, with axes, ticks and
    a legend naming each curve."""
    from PIL import Image, ImageDraw

    left, top, legend = 56, 30, 14 + 6 * max(len(_short_name(name)) for name in names) + 10
    total_width, total_height = left + width + 20 + legend, top + height + 40
    image = Image.new("RGB", (total_width, total_height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 8), title, fill="black")
    draw.rectangle([left, top, left + width, top + height], outline="black")
    for tick in np.linspace(low, high, 5):
        y = top + height - (tick - low) / max(high - low, 1e-12) * height
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((left - 40, y - 5), f"{tick:.2f}", fill="black")
    num_points = series.shape[1]
    xs = left + np.linspace(0, width, max(num_points, 2))[:num_points]
    for position in sorted({0, num_points // 2, num_points - 1}):
        draw.line([xs[position], top + height, xs[position], top + height + 4], fill="black")
        draw.text((xs[position] - 8, top + height + 6), str(steps[position]), fill="black")
    draw.text((left + width // 2 - 40, top + height + 22), "optimiser step", fill="black")
    draw.text((4, top - 16), ylabel, fill="black")
    for index, values in enumerate(series):
        colour = tuple(int(c) for c in _PALETTE[index % len(_PALETTE)])
        ys = top + height - np.clip((values - low) / max(high - low, 1e-12), 0, 1) * height
        points = list(zip(xs.tolist(), ys.tolist()))
        if len(points) == 1:
            draw.ellipse([points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2], fill=colour)
        else:
            draw.line(points, fill=colour, width=2)
        y = top + 4 + index * 14
        draw.rectangle([left + width + 20, y + 2, left + width + 30, y + 10], fill=colour)
        draw.text((left + width + 34, y), _short_name(names[index]), fill="black")
    return image


def plot_adaptive_structure(history: list[dict], output_dir: str) -> list[str]:
    """Draws the records of [`AdaptiveLxmertStructureCallback`] to PNG files in `output_dir`:
    `spans_heatmap.png` / `alphas_heatmap.png` (final value per attention module (row, named, in model order) and
    head (column); spans 0 -> 1, alphas 1 -> 2 from dark blue to yellow, with a colour bar and the values) and
    `spans_over_training.png` / `alphas_over_training.png` (mean over heads of each module across the recorded steps,
    one colour per module, with axes and a legend: the paper's span-per-layer and alpha figures).
    Returns the written paths (none for a mechanism the model does not use)."""
    os.makedirs(output_dir, exist_ok=True)
    written = []
    labels = {"spans": ("learned span (fraction of the maximum span)", "span"),
              "alphas": ("learned entmax alpha (1 = softmax, 2 = sparsemax)", "alpha")}
    for key, low, high in (("spans", 0.0, 1.0), ("alphas", 1.0, 2.0)):
        if not history or not history[-1][key]:
            continue
        names = list(history[-1][key])
        final = np.array([history[-1][key][name] for name in names], dtype=float)  # (modules, heads)
        path = os.path.join(output_dir, f"{key}_heatmap.png")
        _heatmap_figure(final, names, low, high, f"{labels[key][0]}, per module and head, step "
                        f"{history[-1]['step']}").save(path)  # fmt: skip
        written.append(path)
        means = np.array([[np.mean(record[key][name]) for record in history] for name in names])  # (modules, records)
        path = os.path.join(output_dir, f"{key}_over_training.png")
        _curves_figure(means, names, [record["step"] for record in history], low, high,
                       f"{labels[key][0]}: mean over heads", labels[key][1]).save(path)  # fmt: skip
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
