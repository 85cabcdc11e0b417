"""A `Trainer` that logs every pre-training objective: the pre-training heads of hf_vl return the weighted total as
`loss` and each objective as its own `*_loss` output field (`msm_loss`, `mrm_loss`, `itm_loss`, `mlm_loss`,
`itc_loss`, ...); the `Trainer` logs only the total. `PretrainingTrainer` averages each objective over the logging
interval and adds it to the logs (and so to `trainer.state.log_history`, TensorBoard, W&B, ...)."""

from __future__ import annotations

from transformers import Trainer

__all__ = ["PretrainingTrainer"]


class PretrainingTrainer(Trainer):
    """`transformers.Trainer` + per-objective training losses in the logs (`train_<objective>` at the end).

    Example:
        >>> trainer = PretrainingTrainer(model=InterBertForPreTraining(config), args=args, train_dataset=dataset,
        ...                              data_collator=collator)
        >>> trainer.train()  # logs {"loss": ..., "msm_loss": ..., "mrm_loss": ..., "itm_loss": ..., ...}
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._objective_sums: dict[str, float] = {}
        self._objective_counts: dict[str, int] = {}
        self.objective_totals: dict[str, list[float]] = {}  # (sum, count) over the whole run, per objective

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training and hasattr(outputs, "items"):
            for key, value in outputs.items():
                if key.endswith("_loss") and key != "loss" and value is not None and value.numel() == 1:
                    number = float(value.detach())
                    self._objective_sums[key] = self._objective_sums.get(key, 0.0) + number
                    self._objective_counts[key] = self._objective_counts.get(key, 0) + 1
                    total = self.objective_totals.setdefault(key, [0.0, 0])
                    total[0] += number
                    total[1] += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._objective_counts:  # a training log: add the interval's objective means
            for key, count in self._objective_counts.items():
                logs[key] = round(self._objective_sums[key] / count, 4)
            self._objective_sums.clear()
            self._objective_counts.clear()
        elif "train_runtime" in logs:  # the end-of-training summary: the run's mean per objective
            for key, (total, count) in self.objective_totals.items():
                logs[f"train_{key}"] = round(total / max(count, 1), 4)
        super().log(logs, start_time)
