"""End-to-end tests of the hf_vl task pipelines with tiny saved METER checkpoints and easy-VQA images."""

import json
import os

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import pipeline
from transformers.pipelines import PIPELINE_REGISTRY, check_task, get_supported_tasks

from hf_vl import MeterForImageAndTextRetrieval, MeterForPreTraining, MeterForQuestionAnswering, MeterProcessor
from hf_vl.pipelines import (
    SUPPORTED_TASKS,
    AutoModelForImageTextMatching,
    ImageTextRetrievalPipeline,
    ITMZeroShotImageClassificationPipeline,
    VLQuestionAnsweringPipeline,
    register_pipelines,
)
from vl_pipeline_test_utils import easy_vqa_answers

QUESTION = "what color is the shape?"
TEXTS = ["a red circle", "a blue rectangle", "a green triangle", "the shape is brown", "yes"]
LABELS = ["circle", "rectangle", "triangle", "square"]


# --- helpers --------------------------------------------------------------------------------------------------------


def direct_outputs(model, processor, images, texts):
    inputs = processor(images=images, text=texts, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs)


def direct_match(model, processor, images, texts):
    """(match logit, pipeline score) per pair, computed with the model directly."""
    outputs = direct_outputs(model, processor, images, texts)
    if getattr(outputs, "itm_logits", None) is not None:
        itm = outputs.itm_logits
        return itm[:, 1] - itm[:, 0], itm.softmax(-1)[:, 1]
    return outputs.logits[:, 0], outputs.logits[:, 0]


def assert_same_results(first, second, atol=1e-5):
    assert type(first) is type(second)
    if isinstance(first, list):
        assert len(first) == len(second)
        for a, b in zip(first, second):
            assert_same_results(a, b, atol)
    elif isinstance(first, dict):
        assert first.keys() == second.keys()
        for key in first:
            if isinstance(first[key], float):
                assert first[key] == pytest.approx(second[key], abs=atol), key
            else:
                assert first[key] == second[key], key
    else:
        assert first == second


def assert_sorted(results):
    scores = [entry["score"] for entry in results]
    assert scores == sorted(scores, reverse=True)


@pytest.fixture(scope="module")
def vqa(vqa_checkpoint):
    return pipeline("vl-question-answering", model=vqa_checkpoint[0], device="cpu")


@pytest.fixture(scope="module")
def retrieval(retrieval_checkpoint):
    return pipeline("image-text-retrieval", model=retrieval_checkpoint[0], device="cpu")


@pytest.fixture(scope="module")
def itm_retrieval(pretraining_checkpoint):
    return pipeline("image-text-retrieval", model=pretraining_checkpoint[0], device="cpu")


@pytest.fixture(scope="module")
def zero_shot(pretraining_checkpoint):
    return pipeline("itm-zero-shot-image-classification", model=pretraining_checkpoint[0], device="cpu")


# --- registration ---------------------------------------------------------------------------------------------------


def test_tasks_are_registered():
    supported = get_supported_tasks()
    for task, pipeline_class in SUPPORTED_TASKS.items():
        assert task in supported
        assert PIPELINE_REGISTRY.supported_tasks[task]["impl"] is pipeline_class
        assert PIPELINE_REGISTRY.supported_tasks[task]["type"] == "multimodal"
        assert "default" not in PIPELINE_REGISTRY.supported_tasks[task]
    assert "vqa" in supported
    assert PIPELINE_REGISTRY.check_task("vqa")[0] == "vl-question-answering"
    register_pipelines()  # idempotent
    assert PIPELINE_REGISTRY.supported_tasks["vl-question-answering"]["impl"] is VLQuestionAnsweringPipeline


def test_processor_and_heads_are_loaded_automatically(vqa, retrieval, itm_retrieval, zero_shot):
    for pipe in (vqa, retrieval, itm_retrieval, zero_shot):
        assert isinstance(pipe.processor, MeterProcessor)
        assert pipe.tokenizer is pipe.processor.tokenizer and pipe.tokenizer.vocab_size == 30522
        assert pipe.image_processor is pipe.processor.image_processor
    assert isinstance(vqa, VLQuestionAnsweringPipeline) and isinstance(vqa.model, MeterForQuestionAnswering)
    assert isinstance(retrieval, ImageTextRetrievalPipeline)
    assert isinstance(retrieval.model, MeterForImageAndTextRetrieval)
    assert isinstance(itm_retrieval.model, MeterForPreTraining)  # the saved ITM head, not a new retrieval head
    assert isinstance(zero_shot, ITMZeroShotImageClassificationPipeline)


def test_image_text_matching_auto_class_follows_saved_head(
    vqa_checkpoint, retrieval_checkpoint, pretraining_checkpoint
):
    assert type(AutoModelForImageTextMatching.from_pretrained(retrieval_checkpoint[0])) is MeterForImageAndTextRetrieval
    assert type(AutoModelForImageTextMatching.from_pretrained(pretraining_checkpoint[0])) is MeterForPreTraining
    # no matching head saved: a retrieval head (new weights)
    assert type(AutoModelForImageTextMatching.from_pretrained(vqa_checkpoint[0])) is MeterForImageAndTextRetrieval


# --- vl-question-answering ------------------------------------------------------------------------------------------


def test_vqa_single_example(vqa, vqa_checkpoint, processor, image_paths):
    answers = easy_vqa_answers()
    result = vqa(image=image_paths[0], question=QUESTION)
    assert isinstance(result, list) and len(result) == 5  # default top_k
    assert all(set(entry) == {"answer", "score"} for entry in result)
    assert all(entry["answer"] in answers and 0.0 <= entry["score"] <= 1.0 for entry in result)
    assert_sorted(result)

    # scores are the sigmoid of the model's logits (multi-label VQA head)
    logits = direct_outputs(vqa_checkpoint[1], processor, image_paths[0], QUESTION).logits[0]
    probabilities = logits.sigmoid()
    everything = vqa(image=image_paths[0], question=QUESTION, top_k=100)
    assert len(everything) == len(answers)  # top_k is capped at the number of answers
    for entry in everything:
        assert entry["score"] == pytest.approx(probabilities[answers.index(entry["answer"])].item(), abs=1e-5)
    assert everything[0]["answer"] == answers[int(logits.argmax())]

    top2 = vqa(image=image_paths[0], question=QUESTION, top_k=2)
    assert_same_results(top2, everything[:2])


def test_vqa_softmax_for_single_label_heads(vqa, image_paths):
    config = vqa.model.config
    previous = config.problem_type
    try:
        config.problem_type = "single_label_classification"
        result = vqa(image=image_paths[0], question=QUESTION, top_k=100)
    finally:
        config.problem_type = previous
    assert sum(entry["score"] for entry in result) == pytest.approx(1.0, abs=1e-5)
    assert_sorted(result)


def test_vqa_image_formats(vqa, image_paths):
    path = image_paths[0]
    expected = vqa(image=path, question=QUESTION)
    pil = PIL.Image.open(path).convert("RGB")
    assert_same_results(vqa(image=pil, question=QUESTION), expected)
    assert_same_results(vqa(image=np.asarray(pil), question=QUESTION), expected)
    assert_same_results(vqa({"image": path, "question": QUESTION}), expected)


def test_vqa_batching_matches_one_by_one(vqa, image_paths):
    questions = [QUESTION, "what shape is in the image?", "is there a circle?", "is the shape red?"]
    one_by_one = [vqa(image=path, question=question, top_k=3) for path, question in zip(image_paths, questions)]
    pairs = [{"image": path, "question": question} for path, question in zip(image_paths, questions)]
    for batch_size in (1, 3, 4):
        assert_same_results(vqa(pairs, top_k=3, batch_size=batch_size), one_by_one)
    # two lists are paired; one question goes to every image; one image gets every question
    assert_same_results(vqa(image=image_paths, question=questions, top_k=3, batch_size=2), one_by_one)
    same_question = vqa(image=image_paths, question=QUESTION, top_k=3)
    assert_same_results(same_question, [vqa(image=path, question=QUESTION, top_k=3) for path in image_paths])
    same_image = vqa(image=image_paths[0], question=questions, top_k=3)
    assert_same_results(same_image, [vqa(image=image_paths[0], question=q, top_k=3) for q in questions])


def test_vqa_alias_and_model_instance(vqa_checkpoint, processor, image_paths):
    by_alias = pipeline("vqa", model=vqa_checkpoint[0], device="cpu")
    assert isinstance(by_alias, VLQuestionAnsweringPipeline)
    from_objects = pipeline("vl-question-answering", model=vqa_checkpoint[1], processor=processor, device="cpu")
    assert_same_results(
        from_objects(image=image_paths[1], question=QUESTION), by_alias(image=image_paths[1], question=QUESTION)
    )


def test_vqa_errors(vqa, image_paths, retrieval_checkpoint, processor):
    with pytest.raises(ValueError, match="needs an image"):
        vqa(question=QUESTION)
    with pytest.raises(ValueError, match="needs a question"):
        vqa(image=image_paths[0])
    for empty in ("", "   "):
        with pytest.raises(ValueError, match="non-empty string"):
            vqa(image=image_paths[0], question=empty)
    with pytest.raises(ValueError, match="non-empty string"):
        vqa({"image": image_paths[0], "question": ""})
    with pytest.raises(ValueError, match="needs an image"):
        vqa({"question": QUESTION})
    with pytest.raises(ValueError, match="`image` is empty"):
        vqa(image=[], question=QUESTION)
    with pytest.raises(ValueError, match="different lengths"):
        vqa(image=image_paths[:2], question=[QUESTION] * 3)
    with pytest.raises(TypeError, match="must be a string"):
        vqa(image=image_paths[0], question=3)
    with pytest.raises(ValueError, match="top_k"):
        vqa(image=image_paths[0], question=QUESTION, top_k=0)
    with pytest.raises(ValueError, match=r"vl-question-answering.*MeterForQuestionAnswering"):
        pipeline("vl-question-answering", model=retrieval_checkpoint[1], processor=processor, device="cpu")
    with pytest.raises(ValueError, match="processor"):
        VLQuestionAnsweringPipeline(model=retrieval_checkpoint[1], device="cpu")


def test_removed_visual_question_answering_name_stays_removed():
    # transformers v5 refuses this name; hf_vl documents "vl-question-answering" (alias "vqa") instead
    with pytest.raises(KeyError, match="removed"):
        check_task("visual-question-answering")
    assert check_task("vqa")[0] == "vl-question-answering"


# --- image-text-retrieval -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("checkpoint_name", ["retrieval_checkpoint", "pretraining_checkpoint"])
def test_retrieval_image_to_texts_matches_model(checkpoint_name, request, processor, image_paths):
    folder, model = request.getfixturevalue(checkpoint_name)
    pipe = pipeline("image-text-retrieval", model=folder, device="cpu")
    result = pipe(image_paths[0], candidate_texts=TEXTS)
    assert len(result) == len(TEXTS) and sorted(entry["text"] for entry in result) == sorted(TEXTS)
    assert all(set(entry) == {"text", "score", "probability"} for entry in result)
    assert_sorted(result)

    logits, scores = direct_match(model, processor, [image_paths[0]] * len(TEXTS), TEXTS)
    expected_order = [TEXTS[index] for index in torch.argsort(scores, descending=True, stable=True)]
    assert [entry["text"] for entry in result] == expected_order
    for entry in result:
        index = TEXTS.index(entry["text"])
        assert entry["score"] == pytest.approx(scores[index].item(), abs=1e-5)
        assert entry["probability"] == pytest.approx(logits[index].sigmoid().item(), abs=1e-5)
        assert 0.0 <= entry["probability"] <= 1.0
    if checkpoint_name == "pretraining_checkpoint":  # ITM: score = softmax(itm_logits)[1]
        assert all(0.0 <= entry["score"] <= 1.0 for entry in result)
        assert all(entry["score"] == pytest.approx(entry["probability"], abs=1e-6) for entry in result)

    assert_same_results(pipe(image_paths[0], candidate_texts=TEXTS, top_k=2), result[:2])


@pytest.mark.parametrize("checkpoint_name", ["retrieval_checkpoint", "pretraining_checkpoint"])
def test_retrieval_text_to_images_matches_model(checkpoint_name, request, processor, image_paths):
    folder, model = request.getfixturevalue(checkpoint_name)
    pipe = pipeline("image-text-retrieval", model=folder, device="cpu")
    query = "a blue rectangle"
    result = pipe(text=query, candidate_images=image_paths)
    assert all(set(entry) == {"image_index", "score", "probability"} for entry in result)
    assert sorted(entry["image_index"] for entry in result) == list(range(len(image_paths)))
    assert_sorted(result)
    _, scores = direct_match(model, processor, image_paths, [query] * len(image_paths))
    assert [entry["image_index"] for entry in result] == torch.argsort(scores, descending=True, stable=True).tolist()
    for entry in result:
        assert entry["score"] == pytest.approx(scores[entry["image_index"]].item(), abs=1e-5)
    top1 = pipe(text=query, candidate_images=[PIL.Image.open(path) for path in image_paths], top_k=1)
    assert_same_results(top1, result[:1])


def test_retrieval_batches_candidates(retrieval, image_paths):
    texts = [f"a shape number {index}" for index in range(11)] + TEXTS
    batch_sizes = []
    handle = retrieval.model.register_forward_hook(
        lambda module, args, kwargs, output: batch_sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        reference = retrieval(image_paths[0], candidate_texts=texts, batch_size=1)
        batch_sizes.clear()
        batched = retrieval(image_paths[0], candidate_texts=texts, batch_size=4)
    finally:
        handle.remove()
    assert batch_sizes == [4, 4, 4, 4]  # 16 candidates, never more than 4 pairs per forward pass
    assert_same_results(batched, reference)
    assert_same_results(retrieval(image_paths[0], candidate_texts=texts), reference)  # default batch_size 8


def test_retrieval_lists_of_queries_match_one_by_one(retrieval, image_paths):
    one_by_one = [retrieval(path, candidate_texts=TEXTS, top_k=3) for path in image_paths]
    assert_same_results(retrieval(image_paths, candidate_texts=TEXTS, top_k=3, batch_size=3), one_by_one)
    as_dicts = [{"image": path, "candidate_texts": TEXTS} for path in image_paths]
    assert_same_results(retrieval(as_dicts, top_k=3, batch_size=7), one_by_one)
    queries = ["a red circle", "a teal triangle"]
    one_by_one = [retrieval(text=query, candidate_images=image_paths) for query in queries]
    assert_same_results(retrieval(text=queries, candidate_images=image_paths, batch_size=3), one_by_one)


def test_retrieval_errors(retrieval, image_paths, vqa_checkpoint, processor):
    with pytest.raises(ValueError, match="needs a query"):
        retrieval(candidate_texts=TEXTS)
    with pytest.raises(ValueError, match="candidate_texts"):
        retrieval(image_paths[0])
    with pytest.raises(ValueError, match="empty"):
        retrieval(image_paths[0], candidate_texts=[])
    with pytest.raises(ValueError, match="non-empty string"):
        retrieval(image_paths[0], candidate_texts=["a circle", " "])
    with pytest.raises(ValueError, match="candidate_images"):
        retrieval(text="a circle")
    with pytest.raises(ValueError, match="empty"):
        retrieval(text="a circle", candidate_images=[])
    with pytest.raises(TypeError, match="list of images"):
        retrieval(text="a circle", candidate_images=image_paths[0])
    with pytest.raises(ValueError, match="not both"):
        retrieval(image_paths[0], text="a circle", candidate_texts=TEXTS)
    with pytest.raises(ValueError, match="non-empty string"):
        retrieval(text="", candidate_images=image_paths)
    with pytest.raises(ValueError, match=r"image-text-retrieval.*MeterForImageAndTextRetrieval.*MeterForPreTraining"):
        pipeline("image-text-retrieval", model=vqa_checkpoint[1], processor=processor, device="cpu")


# --- itm-zero-shot-image-classification -----------------------------------------------------------------------------


@pytest.mark.parametrize("checkpoint_name", ["pretraining_checkpoint", "retrieval_checkpoint"])
def test_zero_shot_matches_model(checkpoint_name, request, processor, image_paths):
    folder, model = request.getfixturevalue(checkpoint_name)
    pipe = pipeline("itm-zero-shot-image-classification", model=folder, device="cpu")
    result = pipe(image_paths[0], candidate_labels=LABELS)
    assert [set(entry) for entry in result] == [{"label", "score"}] * len(LABELS)
    assert sorted(entry["label"] for entry in result) == sorted(LABELS)
    assert sum(entry["score"] for entry in result) == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= entry["score"] <= 1.0 for entry in result)
    assert_sorted(result)

    captions = [f"a photo of a {label}." for label in LABELS]
    logits, _ = direct_match(model, processor, [image_paths[0]] * len(LABELS), captions)
    expected = logits.softmax(-1)
    for entry in result:
        assert entry["score"] == pytest.approx(expected[LABELS.index(entry["label"])].item(), abs=1e-5)

    template = "there is a {} in the picture"
    custom = pipe(image_paths[0], candidate_labels=LABELS, hypothesis_template=template)
    logits, _ = direct_match(model, processor, [image_paths[0]] * len(LABELS), [template.format(l) for l in LABELS])
    for entry in custom:
        assert entry["score"] == pytest.approx(logits.softmax(-1)[LABELS.index(entry["label"])].item(), abs=1e-5)
    assert_same_results(pipe(image_paths[0], candidate_labels=LABELS, top_k=2), result[:2])


def test_zero_shot_batching_matches_one_by_one(zero_shot, image_paths):
    one_by_one = [zero_shot(path, candidate_labels=LABELS) for path in image_paths]
    for batch_size in (1, 3, 16):
        assert_same_results(zero_shot(image_paths, candidate_labels=LABELS, batch_size=batch_size), one_by_one)
    as_dicts = [{"image": path, "candidate_labels": LABELS} for path in image_paths]
    assert_same_results(zero_shot(as_dicts), one_by_one)
    assert_same_results(zero_shot(image_paths[0], candidate_labels=",".join(LABELS)), one_by_one[0])


def test_zero_shot_errors(zero_shot, image_paths, vqa_checkpoint, processor):
    with pytest.raises(ValueError, match="candidate_labels"):
        zero_shot(image_paths[0])
    with pytest.raises(ValueError, match="empty"):
        zero_shot(image_paths[0], candidate_labels=[])
    with pytest.raises(ValueError, match="needs an image"):
        zero_shot(candidate_labels=LABELS)
    with pytest.raises(ValueError, match="slot"):
        zero_shot(image_paths[0], candidate_labels=LABELS, hypothesis_template="a photo")
    with pytest.raises(ValueError, match=r"itm-zero-shot-image-classification.*MeterForImageAndTextRetrieval"):
        pipeline("itm-zero-shot-image-classification", model=vqa_checkpoint[1], processor=processor, device="cpu")


# --- saving ---------------------------------------------------------------------------------------------------------


def test_save_pretrained_round_trip(retrieval, image_paths, tmp_path):
    retrieval.save_pretrained(tmp_path)
    assert "custom_pipelines" not in json.loads((tmp_path / "config.json").read_text())
    reloaded = pipeline("image-text-retrieval", model=str(tmp_path), device="cpu")
    assert_same_results(
        reloaded(image_paths[0], candidate_texts=TEXTS), retrieval(image_paths[0], candidate_texts=TEXTS)
    )
    with pytest.raises(ValueError, match="custom pipeline code"):
        retrieval.save_pretrained(tmp_path / "code", save_pipeline_code=True)


def test_vqa_saved_as_custom_pipeline(vqa, image_paths, tmp_path):
    vqa.save_pretrained(tmp_path, save_pipeline_code=True)
    config = json.loads((tmp_path / "config.json").read_text())
    entry = config["custom_pipelines"]["vl-question-answering"]
    assert entry["impl"] == "vl_question_answering.VLQuestionAnsweringPipeline"
    assert entry["pt"] == ["AutoModelForVisualQuestionAnswering"]
    assert {"vl_question_answering.py", "_utils.py"} <= set(os.listdir(tmp_path))
    assert not hasattr(vqa.model.config, "custom_pipelines")  # the live config is left as it was

    remote = pipeline("vl-question-answering", model=str(tmp_path), trust_remote_code=True, device="cpu")
    assert type(remote).__name__ == "VLQuestionAnsweringPipeline" and type(remote) is not VLQuestionAnsweringPipeline
    assert_same_results(
        remote(image=image_paths[2], question=QUESTION), vqa(image=image_paths[2], question=QUESTION)
    )
