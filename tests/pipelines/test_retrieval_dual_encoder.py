"""The retrieval and ITM zero-shot pipelines with a dual encoder (VLMo's `VlmoForImageAndTextRetrieval`, a tiny CLIP):
the query and every candidate are encoded once by their own towers and ranked by the scaled dot product, exactly the
ranking of `get_image_features @ get_text_features.T`; no fusion pass runs."""

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoTokenizer, pipeline

from hf_vl import (
    VlmoConfig,
    VlmoForImageAndTextRetrieval,
    VlmoForPreTraining,
    VlmoImageProcessor,
    VlmoProcessor,
)
from hf_vl.pipelines import AutoModelForImageTextMatching
from vl_pipeline_test_utils import minilm_model_dir

TEXTS = ["a red circle", "a blue rectangle", "a green triangle", "a yellow circle", "the shape is brown", "yes",
         "a gray square"]
LABELS = ["circle", "rectangle", "triangle"]


def _tiny_vlmo_config(tokenizer) -> VlmoConfig:
    # initializer_range 0.2: similarities of different pairs differ by ~0.1, so rankings are stable under float noise
    return VlmoConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=37, vl_ffn_start_layer=1, image_size=32, max_text_len=40,
                      max_relative_text_length=40, drop_path_rate=0.0, embedding_dropout_prob=0.0,
                      initializer_range=0.2)


@pytest.fixture(scope="module")
def vlmo_processor():
    tokenizer = AutoTokenizer.from_pretrained(minilm_model_dir())
    return VlmoProcessor(VlmoImageProcessor(size={"height": 32, "width": 32}), tokenizer)


@pytest.fixture(scope="module")
def dual_checkpoint(tmp_path_factory, vlmo_processor):
    torch.manual_seed(0)
    model = VlmoForImageAndTextRetrieval(_tiny_vlmo_config(vlmo_processor.tokenizer)).eval()
    folder = tmp_path_factory.mktemp("tiny-vlmo-dual")
    model.save_pretrained(folder)
    vlmo_processor.save_pretrained(folder)
    return str(folder), model


@pytest.fixture(scope="module")
def retrieval(dual_checkpoint):
    return pipeline("image-text-retrieval", model=dual_checkpoint[0], device="cpu")


@pytest.fixture(scope="module")
def images(image_paths):
    """4 easy-VQA images and 2 random ones."""
    rng = np.random.default_rng(0)
    noise = [PIL.Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(2)]
    return list(image_paths) + noise


def by_hand(model, processor, images, texts):
    """`exp(logit_scale) * get_image_features @ get_text_features.T`, `(num_images, num_texts)`."""
    with torch.no_grad():
        image_embeds = model.vlmo.get_image_features(**processor(images=images, return_tensors="pt")).pooler_output
        text_embeds = model.vlmo.get_text_features(**processor(text=texts, return_tensors="pt")).pooler_output
        return model.vlmo.logit_scale.exp() * image_embeds @ text_embeds.t()


class TowerCounter:
    """Counts rows through VLMo's text and image embeddings (one row = one text / image encoded) and refuses any
    fusion pass or call of the model's own forward."""

    def __init__(self, model):
        self.rows = {"text": 0, "image": 0}
        self.passes = {"text": 0, "image": 0}
        self._handles = [
            model.vlmo.text_embeddings.register_forward_hook(self._hook("text")),
            model.vlmo.image_embeddings.register_forward_hook(self._hook("image")),
            model.register_forward_pre_hook(self._refuse("the model's forward (pairs)")),
        ]
        self._model = model
        model.vlmo.encode_fusion = self._refuse("a fusion-mode pass")

    def _hook(self, modality):
        def count(module, inputs, output):
            self.rows[modality] += output.shape[0]
            self.passes[modality] += 1
        return count

    @staticmethod
    def _refuse(what):
        def refuse(*args, **kwargs):
            raise AssertionError(f"the dual-encoder pipeline ran {what}")
        return refuse

    def close(self):
        for handle in self._handles:
            handle.remove()
        del self._model.vlmo.encode_fusion  # back to the class method


@pytest.fixture
def counter(retrieval):
    counting = TowerCounter(retrieval.model)
    yield counting
    counting.close()


def test_the_saved_dual_encoder_is_loaded_and_used(dual_checkpoint, retrieval):
    assert type(AutoModelForImageTextMatching.from_pretrained(dual_checkpoint[0])) is VlmoForImageAndTextRetrieval
    assert type(retrieval.model) is VlmoForImageAndTextRetrieval  # not a VlmoForPreTraining with a new ITM head
    assert retrieval.dual_encoder


def test_image_to_text_ranking_is_the_dot_product_ranking(retrieval, dual_checkpoint, vlmo_processor, images):
    model = dual_checkpoint[1]
    logits = by_hand(model, vlmo_processor, images, TEXTS)
    with torch.no_grad():
        inputs = {**vlmo_processor(images=images, return_tensors="pt"),
                  **vlmo_processor(text=TEXTS, return_tensors="pt")}
        forward = model(**inputs).logits_per_image  # the model's own dual-encoder forward
    torch.testing.assert_close(logits, forward)
    for row, image in enumerate(images):
        results = retrieval(image, candidate_texts=TEXTS)
        expected = [TEXTS[index] for index in logits[row].argsort(descending=True).tolist()]
        assert [entry["text"] for entry in results] == expected
        probabilities = logits[row].softmax(-1)
        for entry in results:
            index = TEXTS.index(entry["text"])
            assert entry["score"] == pytest.approx(logits[row, index].item(), abs=1e-4)
            assert entry["probability"] == pytest.approx(probabilities[index].item(), abs=1e-5)
        assert sum(entry["probability"] for entry in results) == pytest.approx(1.0, abs=1e-5)
    assert len({tuple(logits[row].argsort().tolist()) for row in range(len(images))}) > 1  # the test can fail


def test_text_to_image_ranking_is_the_dot_product_ranking(retrieval, dual_checkpoint, vlmo_processor, images):
    logits = by_hand(dual_checkpoint[1], vlmo_processor, images, TEXTS).t()  # (texts, images)
    for row, text in enumerate(TEXTS):
        results = retrieval(text=text, candidate_images=images)
        assert [entry["image_index"] for entry in results] == logits[row].argsort(descending=True).tolist()
        for entry in results:
            assert entry["score"] == pytest.approx(logits[row, entry["image_index"]].item(), abs=1e-4)
            assert entry["probability"] == pytest.approx(logits[row].softmax(-1)[entry["image_index"]].item(), abs=1e-5)


def test_each_candidate_is_encoded_once_and_nothing_is_fused(retrieval, counter, images):
    retrieval(images[0], candidate_texts=TEXTS, batch_size=3)
    assert counter.rows == {"text": 7, "image": 1} and counter.passes == {"text": 3, "image": 1}

    counter.rows.update(text=0, image=0)
    retrieval(images[:3], candidate_texts=TEXTS, batch_size=4)  # three queries share the candidates
    assert counter.rows == {"text": 7, "image": 3}

    counter.rows.update(text=0, image=0)
    retrieval(text="a red circle", candidate_images=images, batch_size=2)
    assert counter.rows == {"text": 1, "image": 6}

    counter.rows.update(text=0, image=0)
    repeated = retrieval(images[0], candidate_texts=["a red circle", "a blue rectangle", "a red circle"], batch_size=8)
    assert counter.rows == {"text": 2, "image": 1}  # a repeated candidate is encoded once
    scores = {entry["text"]: entry["score"] for entry in repeated}
    assert [entry["score"] for entry in repeated if entry["text"] == "a red circle"] == [scores["a red circle"]] * 2

    counter.rows.update(text=0, image=0)
    retrieval(images[0], candidate_texts=TEXTS, encode_query_once=False)  # meaningless for a dual encoder
    assert counter.rows == {"text": 7, "image": 1}


def assert_same(first, second, atol=1e-5):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        if isinstance(a, list):
            assert_same(a, b, atol)
            continue
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=atol) if isinstance(a[key], float) else a[key] == b[key]


def test_batching_and_lists_of_queries_match_one_by_one(retrieval, images):
    one_by_one = [retrieval(image, candidate_texts=TEXTS) for image in images]
    for batch_size in (1, 2, 16):
        assert_same(retrieval(images, candidate_texts=TEXTS, batch_size=batch_size), one_by_one)
    texts_one_by_one = [retrieval(text=text, candidate_images=images) for text in TEXTS[:3]]
    for batch_size in (1, 4):
        assert_same(retrieval(text=TEXTS[:3], candidate_images=images, batch_size=batch_size), texts_one_by_one)
    as_dicts = [{"image": image, "candidate_texts": TEXTS} for image in images]
    assert_same(retrieval(as_dicts, batch_size=3), one_by_one)


def test_top_k_keeps_the_best_candidates_with_probabilities_over_all(retrieval, images):
    full = retrieval(images[1], candidate_texts=TEXTS)
    top = retrieval(images[1], candidate_texts=TEXTS, top_k=3)
    assert_same(top, full[:3])
    assert sum(entry["probability"] for entry in top) < 1.0
    assert_same(retrieval(text="a blue rectangle", candidate_images=images, top_k=1),
                retrieval(text="a blue rectangle", candidate_images=images)[:1])
    with pytest.raises(ValueError, match="top_k"):
        retrieval(images[1], candidate_texts=TEXTS, top_k=0)


def test_itm_zero_shot_with_vlmo_matches_transformers_zero_shot(dual_checkpoint, retrieval, images):
    folder, model = dual_checkpoint
    itm_zero_shot = pipeline("itm-zero-shot-image-classification", model=folder, device="cpu")
    assert type(itm_zero_shot.model) is VlmoForImageAndTextRetrieval and itm_zero_shot.dual_encoder
    zero_shot = pipeline("zero-shot-image-classification", model=folder, device="cpu")  # transformers' own
    assert type(zero_shot.model) is VlmoForImageAndTextRetrieval
    template = "This is a photo of {}."  # transformers' default template
    counting = TowerCounter(itm_zero_shot.model)
    try:
        all_ours = itm_zero_shot(images[:3], candidate_labels=LABELS, hypothesis_template=template)
    finally:
        counting.close()
    assert counting.rows == {"text": 3, "image": 3}  # one pass per image, the captions once for the whole call
    for image, ours in zip(images[:3], all_ours):
        theirs = zero_shot(image, candidate_labels=LABELS)
        assert [entry["label"] for entry in ours] == [entry["label"] for entry in theirs]
        for mine, reference in zip(ours, theirs):
            assert mine["score"] == pytest.approx(reference["score"], abs=1e-5)
    assert max(ours[0]["score"] - ours[-1]["score"] for ours in all_ours) > 1e-3  # the labels are told apart
    default = itm_zero_shot(images[0], candidate_labels=LABELS, top_k=2)
    assert len(default) == 2 and default[0]["score"] >= default[1]["score"]


def test_a_pretraining_checkpoint_keeps_its_itm_head(vlmo_processor, tmp_path, images):
    torch.manual_seed(0)
    VlmoForPreTraining(_tiny_vlmo_config(vlmo_processor.tokenizer)).save_pretrained(tmp_path)
    vlmo_processor.save_pretrained(tmp_path)
    itm = pipeline("image-text-retrieval", model=str(tmp_path), device="cpu")
    assert type(itm.model) is VlmoForPreTraining and not itm.dual_encoder
    results = itm(images[0], candidate_texts=TEXTS[:3])
    assert all(0.0 < entry["probability"] < 1.0 for entry in results)
    assert sum(entry["probability"] for entry in results) != pytest.approx(1.0, abs=1e-3)  # sigmoid, not softmax


def test_a_clip_model_is_ranked_as_a_dual_encoder(tmp_path, images):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = AutoTokenizer.from_pretrained(minilm_model_dir())
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    torch.manual_seed(0)
    text_config = dict(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=64, pad_token_id=0, bos_token_id=101,
                       eos_token_id=102)
    vision_config = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                         image_size=32, patch_size=8)
    model = CLIPModel(CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=16,
                                 initializer_factor=5.0)).eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    retrieve = pipeline("image-text-retrieval", model=str(tmp_path), device="cpu")
    assert type(retrieve.model) is CLIPModel and retrieve.dual_encoder
    with torch.no_grad():
        inputs = {**processor(images=images, return_tensors="pt"), **processor(text=TEXTS, padding=True,
                                                                               return_tensors="pt")}
        logits = model(**inputs).logits_per_image
    for row in (0, 4):
        results = retrieve(images[row], candidate_texts=TEXTS, batch_size=3)
        assert [entry["text"] for entry in results] == [TEXTS[i] for i in logits[row].argsort(descending=True).tolist()]
        for entry in results:
            assert entry["score"] == pytest.approx(logits[row, TEXTS.index(entry["text"])].item(), abs=1e-4)
