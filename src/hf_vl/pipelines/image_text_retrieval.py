"""Image-text retrieval: task `"image-text-retrieval"`.

Ranks candidate texts for an image (image -> text retrieval) or candidate images for a text (text -> image
retrieval) by the model's match score, scoring `batch_size` pairs per forward pass. A dual encoder (VLMo's
`VlmoForImageAndTextRetrieval`, CLIP-like models) encodes the query once and each candidate once with its own tower
and ranks by the temperature-scaled dot product; no fused pair is run.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.utils.data
from transformers.pipelines.base import build_pipeline_init_args
from transformers.utils import add_end_docstrings

from ._utils import (
    as_image_list,
    check_inputs_fit_model,
    check_single_image,
    check_text,
    check_text_list,
    check_top_k,
    describe,
    processor_outputs,
    to_model_dtype,
)
from .image_text_matching import ImageTextMatchingPipeline, candidate_key


TASK = "image-text-retrieval"
_QUERY_KEYS = {"image": "candidate_texts", "text": "candidate_images"}


@add_end_docstrings(build_pipeline_init_args(has_processor=True))
class ImageTextRetrievalPipeline(ImageTextMatchingPipeline):
    """
    Ranks candidates by the image-text match score of a retrieval head (`AutoModelForImageAndTextRetrieval`, e.g.
    `MeterForImageAndTextRetrieval`), of the ITM head of a pre-training checkpoint (`MeterForPreTraining`), or of a
    dual encoder (`VlmoForImageAndTextRetrieval`, `CLIPModel`, ...: any class of
    `AutoModelForZeroShotImageClassification`, or a model with `get_image_features` and `get_text_features`).

    Fusion heads score each (query, candidate) pair in a forward pass. A dual encoder is never run on pairs: the query
    goes through its tower once (`get_image_features` / `get_text_features`), each candidate through the other tower
    once (`batch_size` candidates per pass; within one call a candidate seen before, e.g. the same candidate texts for
    several query images, is not encoded again), and the score of a pair is the dot product of the L2-normalised
    embeddings times `exp(logit_scale)` (plus `logit_bias` where the model has one): the model's `logits_per_image`.

    Example:

    ```python
    >>> import hf_vl  # registers the task
    >>> from transformers import pipeline
    >>> retrieve = pipeline("image-text-retrieval", model="path/to/meter-retrieval")
    >>> retrieve("shape.png", candidate_texts=["a red circle", "a blue square"])
    [{'text': 'a blue square', 'score': 2.1, 'probability': 0.89}, {'text': 'a red circle', 'score': -1.3, ...}]
    >>> retrieve(text="a blue square", candidate_images=["a.png", "b.png", "c.png"], top_k=1)
    [{'image_index': 2, 'score': 2.4, 'probability': 0.92}]
    ```

    Call arguments:
        image: the query image (PIL image, path/URL or numpy array), a list of query images, a
            `{"image", "candidate_texts"}` dict or a list of dicts; used with `candidate_texts`.
        candidate_texts (`list[str]`): the texts to rank for each query image.
        text (`str` or `list[str]`): the query text(s), or `{"text", "candidate_images"}` dicts; used with
            `candidate_images`.
        candidate_images (`list`): the images to rank for each query text.
        top_k (`int`, *optional*): keep the best `top_k` candidates (default: all).
        batch_size (`int`, *optional*, defaults to 8): (image, text) pairs per forward pass (dual encoders: candidates
            per pass of their tower).
        encode_query_once (`bool`, *optional*, defaults to `True`): run the query image (or text) through its tower
            once and share the result with every candidate pair (models exposing `get_image_encoder_hidden_states` /
            `get_text_encoder_hidden_states`); `False` re-encodes it for every pair. Dual encoders always encode the
            query once (the flag changes nothing there).

    Returns, per query, a list sorted by decreasing score of `{"text", "score", "probability"}` (image -> text) or
    `{"image_index", "score", "probability"}` (text -> image; the index into `candidate_images`). `score` is the
    match logit of a retrieval head, or the ITM match probability (softmax index 1) of a pre-training head;
    `probability` is the match probability in both cases (sigmoid of the match logit). For a dual encoder `score` is
    the logit (scaled similarity) and `probability` the softmax of the logits over all candidates of the query, as in
    transformers' `"zero-shot-image-classification"` pipeline (it sums to 1 over the candidates, also when `top_k`
    keeps fewer; a contrastive model gives no absolute match probability of one pair).
    """

    task_name = TASK

    def _sanitize_parameters(self, top_k=None, encode_query_once=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(kwargs)}.")
        preprocess_params, postprocess_params = {}, {}
        if top_k is not None:
            postprocess_params["top_k"] = check_top_k(top_k)
        if encode_query_once is not None:
            if not isinstance(encode_query_once, bool):
                raise TypeError(f"`encode_query_once` must be True or False, got {describe(encode_query_once)}.")
            preprocess_params["encode_query_once"] = encode_query_once
        return preprocess_params, {}, postprocess_params

    def __call__(
        self,
        image: Any = None,
        candidate_texts: list[str] | None = None,
        text: str | list[str] | None = None,
        candidate_images: list | None = None,
        **kwargs,
    ):
        """Rank `candidate_texts` for `image`, or `candidate_images` for `text`. See the class docstring."""
        return super().__call__(self._build_inputs(image, candidate_texts, text, candidate_images), **kwargs)

    @staticmethod
    def _build_inputs(image, candidate_texts, text, candidate_images) -> Any:
        explicit = candidate_texts is not None or text is not None or candidate_images is not None
        if isinstance(image, dict) or (
            isinstance(image, (list, tuple)) and image and all(isinstance(entry, dict) for entry in image)
        ):
            if explicit:
                raise ValueError(
                    "Pass the query and its candidates inside the input dict(s) or as arguments, not both."
                )
            return image if isinstance(image, dict) else list(image)
        if not explicit and isinstance(image, (types.GeneratorType, torch.utils.data.Dataset)):
            return image  # a dataset / generator of query dicts
        if image is not None and text is not None:
            raise ValueError(
                f"The {TASK} pipeline ranks candidate texts for an image OR candidate images for a text: pass "
                "`image` with `candidate_texts`, or `text` with `candidate_images`, not both `image` and `text`."
            )
        if image is not None:
            if candidate_images is not None:
                raise ValueError(
                    "`candidate_images` goes with a `text` query; with an `image` query pass `candidate_texts`."
                )
            candidate_texts = check_text_list(candidate_texts, "candidate_texts", TASK)
            images = as_image_list(image, "image")
            if images is None:
                return {"image": image, "candidate_texts": candidate_texts}
            return [{"image": picture, "candidate_texts": candidate_texts} for picture in images]
        if text is not None:
            if candidate_texts is not None:
                raise ValueError(
                    "`candidate_texts` goes with an `image` query; with a `text` query pass `candidate_images`."
                )
            candidate_images = _check_candidate_images(candidate_images)
            if isinstance(text, (list, tuple)):
                if len(text) == 0:
                    raise ValueError("`text` is an empty list: pass at least one query text.")
                return [{"text": query, "candidate_images": candidate_images} for query in text]
            return {"text": text, "candidate_images": candidate_images}
        raise ValueError(
            f"The {TASK} pipeline needs a query: `image` (with `candidate_texts`) or `text` (with `candidate_images`)."
        )

    def preprocess(self, inputs: dict, encode_query_once: bool = True):
        if not isinstance(inputs, dict):
            raise TypeError(
                f"Each {TASK} input must be a dict with `image` and `candidate_texts`, or `text` and "
                f"`candidate_images`; got {describe(inputs)}."
            )
        queries = [key for key in _QUERY_KEYS if key in inputs]
        if len(queries) != 1:
            raise ValueError(
                f"Each {TASK} input needs exactly one query, `image` (with `candidate_texts`) or `text` (with "
                f"`candidate_images`); got keys {sorted(inputs)}."
            )
        query = queries[0]
        unknown = set(inputs) - {query, _QUERY_KEYS[query]}
        if unknown:
            raise ValueError(f"Unexpected keys {sorted(unknown)} in a {TASK} input with a `{query}` query.")
        if query == "image":
            image = check_single_image(inputs["image"], "image", TASK)
            texts = check_text_list(inputs.get("candidate_texts"), "candidate_texts", TASK)
            pixels = processor_outputs(self.processor, images=image)
            check_inputs_fit_model(self.model, pixels, text_argument="candidate_texts", image_argument="image")
            pixels = to_model_dtype(pixels, self.dtype)
            if self.dual_encoder:
                pixels = self.encode_query(pixels, "image")
            elif encode_query_once:
                pixels = self._encode_once(pixels, "image")
            for index, candidate in enumerate(texts):
                tokens = processor_outputs(self.processor, text=candidate)
                check_inputs_fit_model(self.model, tokens, f"candidate_texts[{index}]", image_argument="image")
                if self.dual_encoder:
                    tokens["candidate_key"] = candidate_key(tokens, "text")
                yield {
                    **tokens,
                    **pixels,
                    "candidate_text": candidate,
                    "candidate_image_index": None,
                    "is_last": index == len(texts) - 1,
                }
        else:
            text = check_text(inputs["text"], "text", TASK)
            images = _check_candidate_images(inputs.get("candidate_images"))
            tokens = processor_outputs(self.processor, text=text)
            check_inputs_fit_model(self.model, tokens, text_argument="text", image_argument="candidate_images")
            if self.dual_encoder:
                tokens = self.encode_query(tokens, "text")
            elif encode_query_once:
                tokens = self._encode_once(tokens, "text")
            for index, candidate in enumerate(images):
                pixels = processor_outputs(self.processor, images=candidate)
                check_inputs_fit_model(self.model, pixels, "text", image_argument=f"candidate_images[{index}]")
                pixels = to_model_dtype(pixels, self.dtype)
                if self.dual_encoder:
                    pixels["candidate_key"] = candidate_key(pixels, "image")
                yield {
                    **tokens,
                    **pixels,
                    "candidate_text": None,
                    "candidate_image_index": index,
                    "is_last": index == len(images) - 1,
                }

    def _encode_once(self, inputs: dict, modality: str) -> dict:
        """Runs the query through its tower once, so that each batch of candidates only runs the other tower and the
        fusion (1 image x 100 texts: one vision-tower pass, not 100). Models without separate towers (no
        `get_image_encoder_hidden_states` / `get_text_encoder_hidden_states`) get the raw inputs for every pair."""
        base = self.model.base_model
        encoder = getattr(base, f"get_{modality}_encoder_hidden_states", None)
        if encoder is None:
            return inputs
        with torch.inference_mode():
            if modality == "image":
                pixel_values = inputs["pixel_values"].to(self.device)
                rest = {key: value for key, value in inputs.items() if key != "pixel_values"}
                return {**rest, "image_embeds": encoder(pixel_values).cpu()}
            text = {key: inputs[key].to(self.device) for key in ("input_ids", "attention_mask", "token_type_ids")
                    if key in inputs}
            text_embeds = encoder(**text).cpu()
        rest = {key: value for key, value in inputs.items() if key not in ("input_ids", "token_type_ids")}
        return {**rest, "text_embeds": text_embeds}

    def postprocess(self, model_outputs: list[dict], top_k: int | None = None):
        logits = torch.cat([output["match_logit"].reshape(-1)[:1] for output in model_outputs]).float()
        # dual encoder: softmax over the query's candidates (CLIP's zero-shot convention); fusion heads: sigmoid
        probabilities = logits.softmax(-1) if self.dual_encoder else logits.sigmoid()
        results = []
        for output, probability in zip(model_outputs, probabilities.tolist()):
            entry = (
                {"text": output["candidate_text"]}
                if output["candidate_text"] is not None
                else {"image_index": int(output["candidate_image_index"])}
            )
            entry["score"] = float(output["score"].reshape(-1)[0])
            entry["probability"] = probability
            results.append(entry)
        results.sort(key=lambda entry: -entry["score"])  # stable: ties keep the candidate order
        return results if top_k is None else results[:top_k]


def _check_candidate_images(candidate_images: Any) -> list:
    if candidate_images is None:
        raise ValueError(
            f"The {TASK} pipeline needs `candidate_images` (a non-empty list of images) for a `text` query."
        )
    images = as_image_list(candidate_images, "candidate_images")
    if images is None:
        raise TypeError(
            f"`candidate_images` must be a list of images (PIL images, paths/URLs or arrays); got "
            f"{describe(candidate_images)}."
        )
    return images


__all__ = ["ImageTextRetrievalPipeline"]
