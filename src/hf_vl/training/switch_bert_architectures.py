"""Switch-BERT's learned architectures: count them over a dataset and draw the most frequent ones (paper Fig. 4).

With hard routing (inference, paper Eq. 8) every sample runs one architecture: per layer an attention mode (M0
self-self, M1 self-cross, M2 cross-self, M3 joint) and, per modality, the input it read (the previous layer or the one
before, Switch-Input Block). [`count_architectures`] tallies them over batches; [`draw_architectures`] writes a PNG
(PIL only) with one column per architecture: layers from bottom to top, a text cell and an image cell per layer
coloured by what that modality attends (its own tokens, the other modality's, or both), and a skip line on the
outer side where a modality read layer l-2 (for layer 2: the embeddings, drawn from the bottom line).

Example:

```python
>>> from hf_vl.training.switch_bert_architectures import count_architectures, draw_architectures
>>> counts = count_architectures(model, dataloader)          # [(architecture, count), ...] most frequent first
>>> draw_architectures(counts[:4], "runs/switch_bert_architectures.png")
```
"""

from collections import Counter
from collections.abc import Iterable

import torch
from PIL import Image, ImageDraw

#: (text queries attend, image queries attend) per mode id, as in SwitchBertConfig
MODE_KINDS = {0: ("self", "self"), 1: ("self", "cross"), 2: ("cross", "self"), 3: ("joint", "joint")}
MODE_NAMES = {0: "M0 self-self", 1: "M1 self-cross", 2: "M2 cross-self", 3: "M3 joint"}
_KIND_COLOURS = {"self": (120, 170, 235), "cross": (245, 165, 80), "joint": (130, 200, 120)}

#: an architecture: one `(mode, text_input, image_input)` triple per layer (inputs: 0 = layer l-1, 1 = layer l-2)
Architecture = tuple[tuple[int, int, int], ...]


def architectures_from_outputs(outputs) -> list[Architecture]:
    """The per-sample architectures of one batch of Switch-BERT outputs (`attention_modes (B, L)`,
    `input_choices (B, L, 2)`)."""
    modes = outputs.attention_modes.detach().cpu()
    inputs = outputs.input_choices.detach().cpu()
    if modes.dim() != 2 or tuple(inputs.shape) != (*modes.shape, 2):
        raise ValueError(
            f"expected `attention_modes` (batch, layers) and `input_choices` (batch, layers, 2), got "
            f"{tuple(modes.shape)} and {tuple(inputs.shape)}."
        )
    return [tuple((int(m), int(t), int(i)) for m, (t, i) in zip(sample_modes, sample_inputs))
            for sample_modes, sample_inputs in zip(modes.tolist(), inputs.tolist())]


@torch.no_grad()
def count_architectures(model, batches: Iterable[dict], top_n: int | None = None) -> list[tuple[Architecture, int]]:
    """Runs `model` in eval mode (hard routing) over `batches` (dicts of forward kwargs; label keys are dropped) and
    returns `[(architecture, count), ...]`, most frequent first (`top_n` of them when given)."""
    was_training = model.training
    model.eval()
    counter: Counter = Counter()
    device = next(model.parameters()).device
    try:
        for batch in batches:
            inputs = {key: value.to(device) if isinstance(value, torch.Tensor) else value
                      for key, value in batch.items() if key != "labels" and not key.endswith("_labels")
                      and key != "mrm_mask"}
            counter.update(architectures_from_outputs(model(**inputs)))
    finally:
        model.train(was_training)
    return counter.most_common(top_n)


def describe_architecture(architecture: Architecture) -> str:
    """One line per layer, bottom first: `layer 1: M3 joint | text <- l-1 | image <- l-1`."""
    return "\n".join(
        f"layer {index + 1}: {MODE_NAMES[mode]} | text <- {'l-2' if text else 'l-1'} | image <- {'l-2' if image else 'l-1'}"
        for index, (mode, text, image) in enumerate(architecture)
    )


def draw_architectures(counts: list[tuple[Architecture, int]], path, total: int | None = None) -> Image.Image:
    """Draws `[(architecture, count), ...]` side by side into a PNG at `path` and returns the image.

    Each column: a title `#k  n (p%)`, then the layers from bottom (layer 1) to top; per layer a text cell (left) and
    an image cell (right), each coloured and labelled by what it attends (`self`, `cross`, `joint`) with the mode id
    between them; a line on the outer side from layer l-2 to layer l where that modality read layer l-2.
    """
    if not counts:
        raise ValueError("`counts` is empty: nothing to draw.")
    total = total or sum(count for _, count in counts)
    num_layers = max(len(architecture) for architecture, _ in counts)
    cell_w, cell_h, gap, margin, column_w = 70, 26, 14, 30, 250
    width = max(margin * 2 + column_w * len(counts), 480)  # room for the legend line
    height = margin * 2 + 40 + num_layers * (cell_h + gap) + 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for column, (architecture, count) in enumerate(counts):
        left = margin + column * column_w + 25
        draw.text((left, margin), f"#{column + 1}  {count} ({100.0 * count / total:.1f}%)", fill="black")
        bottom = height - margin - 30
        boxes = []
        for layer, (mode, text_input, image_input) in enumerate(architecture):
            top = bottom - (layer + 1) * (cell_h + gap) + gap
            text_box = (left, top, left + cell_w, top + cell_h)
            image_box = (left + cell_w + 40, top, left + 2 * cell_w + 40, top + cell_h)
            for box, kind in zip((text_box, image_box), MODE_KINDS[mode]):
                draw.rectangle(box, fill=_KIND_COLOURS[kind], outline="black")
                draw.text((box[0] + 6, box[1] + 7), kind, fill="black")
            draw.text((left + cell_w + 8, top + 7), f"M{mode}", fill="black")
            boxes.append((text_box, image_box))
            for side, chosen in ((0, text_input), (1, image_input)):
                if chosen and layer >= 1:  # a skip from layer l-2 (the embeddings for layer 2) to layer l
                    target = boxes[layer][side]
                    source_y = bottom + 2 if layer == 1 else (boxes[layer - 2][side][1] + boxes[layer - 2][side][3]) // 2
                    edge = target[0] if side == 0 else target[2]
                    offset = 6 + 6 * (layer % 3)  # staggered so that skips of neighbouring layers stay apart
                    x = edge - offset if side == 0 else edge + offset
                    target_y = (target[1] + target[3]) // 2
                    draw.line([(edge, source_y), (x, source_y), (x, target_y), (edge, target_y)], fill="red", width=2)
                    draw.ellipse((edge - 3, target_y - 3, edge + 3, target_y + 3), fill="red")  # arrow end
        draw.text((left, bottom + 8), "text      image", fill="black")
    legend = "  ".join(f"{kind}" for kind in _KIND_COLOURS)
    draw.text((margin, height - 18), f"cells: what each modality attends ({legend}); red: input from layer l-2",
              fill="black")
    image.save(path, format="PNG")
    return image
