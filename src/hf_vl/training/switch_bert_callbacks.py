"""Trainer callback for Switch-BERT: Gumbel-softmax temperature annealing.

Switch-BERT (Guo et al., ECCV 2022) samples its attention modes and layer inputs with a Gumbel-softmax at
temperature tau (paper Eq. 7). A high tau early keeps every mode trained (the soft weights are near uniform); a small
tau late makes the soft weighting of training close to the hard argmax selection of inference (Eq. 8). The callback
anneals tau from `start` to `end` (a small non-zero value) over training and writes it into the model with
`model.set_gumbel_temperature` (every `SwitchBert*` class); models without it are left alone.
"""

import math

from transformers import TrainerCallback

SCHEDULES = ("exponential", "linear", "cosine")


def _unwrap(model):
    """The model under DataParallel / DDP / accelerate wrappers."""
    while hasattr(model, "module") and not hasattr(model, "set_gumbel_temperature"):
        model = model.module
    return model


def gumbel_temperature(step: int, total_steps: int, start: float, end: float, schedule: str = "exponential") -> float:
    """tau at `step` of `total_steps`: `start` at step 0, `end` from `total_steps` on.

    - exponential: `start * (end / start) ** (step / total_steps)` (geometric decay);
    - linear: `start + (end - start) * step / total_steps`;
    - cosine: `end + (start - end) * (1 + cos(pi * step / total_steps)) / 2`.

    Example:

    ```python
    >>> gumbel_temperature(0, 100, 1.0, 0.1), round(gumbel_temperature(50, 100, 1.0, 0.1), 4)
    (1.0, 0.3162)
    ```
    """
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    if schedule == "exponential":
        return start * (end / start) ** progress
    if schedule == "linear":
        return start + (end - start) * progress
    if schedule == "cosine":
        return end + (start - end) * (1.0 + math.cos(math.pi * progress)) / 2.0
    raise ValueError(f"`schedule` must be one of {SCHEDULES}, got {schedule!r}.")


class GumbelTemperatureCallback(TrainerCallback):
    """Anneals Switch-BERT's Gumbel-softmax temperature before every optimiser step and logs it.

    Args:
        start (`float`, defaults to 1.0): tau at the first step.
        end (`float`, defaults to 0.1): tau at the end of annealing (must be > 0: tau = 0 is the argmax).
        schedule (`str`, defaults to `"exponential"`): `"exponential"`, `"linear"` or `"cosine"`.
        anneal_steps (`int`, *optional*): steps over which tau goes from `start` to `end` (default: the run's
            `max_steps`); tau stays at `end` afterwards.

    Example:

    ```python
    >>> from hf_vl.training import GumbelTemperatureCallback
    >>> trainer = Trainer(model=model, args=args, train_dataset=data,
    ...                   callbacks=[GumbelTemperatureCallback(start=1.0, end=0.1)])
    ```
    """

    def __init__(self, start: float = 1.0, end: float = 0.1, schedule: str = "exponential",
                 anneal_steps: int | None = None):
        for name, value in (("start", start), ("end", end)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"`{name}` must be a float > 0 (tau = 0 is the hard argmax), got {value!r}.")
        if schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {SCHEDULES}, got {schedule!r}.")
        if anneal_steps is not None and (isinstance(anneal_steps, bool) or not isinstance(anneal_steps, int)
                                         or anneal_steps < 1):
            raise ValueError(f"`anneal_steps` must be a positive int or None, got {anneal_steps!r}.")
        self.start, self.end, self.schedule, self.anneal_steps = float(start), float(end), schedule, anneal_steps
        self.temperature = self.start

    def _set(self, step, state, model):
        total = self.anneal_steps or state.max_steps or 1
        self.temperature = gumbel_temperature(step, total, self.start, self.end, self.schedule)
        model = _unwrap(model) if model is not None else None
        if model is not None and hasattr(model, "set_gumbel_temperature"):
            model.set_gumbel_temperature(self.temperature)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._set(state.global_step, state, model)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._set(state.global_step, state, model)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None:
            logs["gumbel_temperature"] = self.temperature
