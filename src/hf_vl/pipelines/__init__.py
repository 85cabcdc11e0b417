"""Task pipelines for hf_vl models, usable through `transformers.pipeline(task, model=...)` after `import hf_vl`.

- `"vl-question-answering"` (alias `"vqa"`): `VLQuestionAnsweringPipeline`, model loaded with
  `AutoModelForVisualQuestionAnswering`.
  `pipe(image=..., question=..., top_k=5)` -> `[{"answer", "score"}]`.
- `"image-text-retrieval"`: `ImageTextRetrievalPipeline`, model loaded with `AutoModelForImageTextMatching` (the
  retrieval head or the ITM pre-training head the checkpoint was saved with).
  `pipe(image, candidate_texts=[...], top_k=None)` -> `[{"text", "score", "probability"}]`;
  `pipe(text=..., candidate_images=[...], top_k=None)` -> `[{"image_index", "score", "probability"}]`.
- `"itm-zero-shot-image-classification"`: `ITMZeroShotImageClassificationPipeline`, model loaded with
  `AutoModelForImageTextMatching`.
  `pipe(image, candidate_labels=[...], hypothesis_template="a photo of a {}.", top_k=None)` -> `[{"label", "score"}]`.
- `"vl-referring-expression"`: `ReferringExpressionPipeline`, model loaded with `AutoModelForReferringExpression`
  (e.g. `SwitchBertForReferringExpression`); candidate boxes become region features through the
  `hf_vl.regions.BoxFeatureExtractor` saved with the model.
  `pipe(image, expression="the red triangle", boxes=[[x1, y1, x2, y2], ...], top_k=None)` ->
  `{"score", "box": {"xmin", "ymin", "xmax", "ymax"}, "region_index"}` (a list of the `top_k` best with `top_k`).

transformers v5 refuses the task name `"visual-question-answering"` (removed task), hence `"vl-question-answering"`.
It also lists `"vqa"` as removed: `register_pipelines()` takes `"vqa"` off that list (only that alias) and points it
at `"vl-question-answering"`.

Every pipeline loads the checkpoint's processor (`AutoProcessor`, e.g. `MeterProcessor`) automatically; pass
`processor=` to override. No task has a default checkpoint (nothing is downloaded): pass `model=`.
"""

from transformers import AutoModelForVisualQuestionAnswering

from .image_text_matching import AutoModelForImageTextMatching, ImageTextMatchingPipeline
from .image_text_retrieval import ImageTextRetrievalPipeline
from .itm_zero_shot_image_classification import ITMZeroShotImageClassificationPipeline
from .referring_expression import AutoModelForReferringExpression, ReferringExpressionPipeline
from .vl_question_answering import VLQuestionAnsweringPipeline


# task name -> pipeline class
SUPPORTED_TASKS = {
    "vl-question-answering": VLQuestionAnsweringPipeline,
    "image-text-retrieval": ImageTextRetrievalPipeline,
    "itm-zero-shot-image-classification": ITMZeroShotImageClassificationPipeline,
    "vl-referring-expression": ReferringExpressionPipeline,
}

# alias -> task name
TASK_ALIASES = {"vqa": "vl-question-answering"}

# task name -> model class(es) `pipeline(task, model=path)` loads the checkpoint with
TASK_MODEL_CLASSES = {
    "vl-question-answering": (AutoModelForVisualQuestionAnswering,),
    "image-text-retrieval": (AutoModelForImageTextMatching,),
    "itm-zero-shot-image-classification": (AutoModelForImageTextMatching,),
    "vl-referring-expression": (AutoModelForReferringExpression,),
}


def register_pipelines() -> None:
    """Register every hf_vl task (and alias) with `transformers.pipelines.PIPELINE_REGISTRY`. Idempotent."""
    import transformers.pipelines as transformers_pipelines
    from transformers.pipelines import PIPELINE_REGISTRY

    for task, pipeline_class in SUPPORTED_TASKS.items():
        current = PIPELINE_REGISTRY.supported_tasks.get(task)
        if current is not None and current.get("impl") is pipeline_class:
            continue
        PIPELINE_REGISTRY.register_pipeline(
            task,
            pipeline_class=pipeline_class,
            pt_model=TASK_MODEL_CLASSES[task],
            type="multimodal",
        )
    removed_tasks = getattr(transformers_pipelines, "REMOVED_TASKS", {})
    for alias, task in TASK_ALIASES.items():
        # transformers v5 lists "vqa" among the removed tasks and refuses it before looking at aliases
        removed_tasks.pop(alias, None)
        PIPELINE_REGISTRY.task_aliases[alias] = task


__all__ = [
    "AutoModelForImageTextMatching",
    "AutoModelForReferringExpression",
    "ITMZeroShotImageClassificationPipeline",
    "ImageTextMatchingPipeline",
    "ImageTextRetrievalPipeline",
    "ReferringExpressionPipeline",
    "SUPPORTED_TASKS",
    "TASK_ALIASES",
    "TASK_MODEL_CLASSES",
    "VLQuestionAnsweringPipeline",
    "register_pipelines",
]
