"""The retrieval pipeline encodes its query once: one vision-tower pass for an image and all its candidate texts,
one text-tower pass for a text and all its candidate images; the scores equal re-encoding the query for every pair."""

import pytest
from transformers import pipeline

TEXTS = [f"a shape number {index}" for index in range(10)] + ["a red circle", "a blue rectangle"]


def _calls(module):
    calls = []
    return calls, module.register_forward_hook(lambda m, i, o: calls.append(1))


@pytest.mark.parametrize("checkpoint_name", ["retrieval_checkpoint", "pretraining_checkpoint"])
def test_image_query_runs_the_vision_tower_once(checkpoint_name, request, image_paths):
    folder, _ = request.getfixturevalue(checkpoint_name)
    pipe = pipeline("image-text-retrieval", model=folder, device="cpu")
    base = pipe.model.base_model
    vision_calls, vision_hook = _calls(base.vision_model)
    text_calls, text_hook = _calls(base.text_model)
    try:
        once = pipe(image_paths[0], candidate_texts=TEXTS, batch_size=4)
        assert len(vision_calls) == 1 and len(text_calls) == 3  # 12 candidates in batches of 4
        vision_calls.clear()
        every_pair = pipe(image_paths[0], candidate_texts=TEXTS, batch_size=4, encode_query_once=False)
        assert len(vision_calls) == 3
    finally:
        vision_hook.remove(), text_hook.remove()
    assert [entry["text"] for entry in once] == [entry["text"] for entry in every_pair]
    for first, second in zip(once, every_pair):
        assert first["score"] == pytest.approx(second["score"], abs=1e-5)


def test_text_query_runs_the_text_tower_once(retrieval_checkpoint, image_paths):
    pipe = pipeline("image-text-retrieval", model=retrieval_checkpoint[0], device="cpu")
    text_calls, hook = _calls(pipe.model.base_model.text_model)
    try:
        once = pipe(text="a blue rectangle", candidate_images=image_paths, batch_size=2)
        assert len(text_calls) == 1
    finally:
        hook.remove()
    every_pair = pipe(text="a blue rectangle", candidate_images=image_paths, batch_size=2, encode_query_once=False)
    assert [entry["image_index"] for entry in once] == [entry["image_index"] for entry in every_pair]
    for first, second in zip(once, every_pair):
        assert first["score"] == pytest.approx(second["score"], abs=1e-5)
    with pytest.raises(TypeError, match="encode_query_once"):
        pipe(text="a blue rectangle", candidate_images=image_paths, encode_query_once="yes")
