"""The "vl-referring-expression" pipeline on a tiny random SwitchBertForReferringExpression saved with its
RegionProcessor and BoxFeatureExtractor: it loads from the folder alone, scores exactly as the model does, returns
pixel boxes in the object-detection format (top_k, both box formats), batches queries without changing results,
takes precomputed regions, and refuses bad input naming the argument."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoTokenizer, pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from hf_vl import SwitchBertConfig, SwitchBertForQuestionAnswering, SwitchBertForReferringExpression
from hf_vl.pipelines import SUPPORTED_TASKS, TASK_MODEL_CLASSES, register_pipelines
from hf_vl.pipelines.referring_expression import AutoModelForReferringExpression, ReferringExpressionPipeline
from hf_vl.regions import BOX_FEATURE_EXTRACTOR_SUBFOLDER, BoxFeatureExtractor, RegionProcessor
from vl_pipeline_test_utils import minilm_model_dir

TASK = "vl-referring-expression"
BOXES = [[20, 30, 60, 70], [80, 10, 110, 40], [0, 0, 64, 48], [64, 48, 128, 96], [35, 30, 75, 70]]


def _scene(flip: bool = False) -> Image.Image:
    image = Image.new("RGB", (128, 96), (238, 243, 250))
    draw = ImageDraw.Draw(image)
    draw.rectangle([20, 30, 59, 69], fill=(220, 20, 20))
    draw.ellipse([80, 10, 109, 39], fill=(20, 20, 220))
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else image


def _tiny_model(feat_dim: int) -> SwitchBertForReferringExpression:
    config = SwitchBertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        visual_feat_dim=feat_dim, visual_pos_dim=4, pooler_size=24, qa_hidden_size=20, switcher_hidden_size=16,
        classifier_dropout_prob=0.0, initializer_range=0.2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = SwitchBertForReferringExpression(config).eval()
    with torch.no_grad():  # well-separated region scores: ranking ties would make order checks flaky
        model.region_scorer.decoder.weight.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-switch-bert-refexp")
    extractor = BoxFeatureExtractor()
    model = _tiny_model(extractor.feature_dim)
    processor = RegionProcessor(AutoTokenizer.from_pretrained(minilm_model_dir()), feature_extractor=None,
                                feat_dim=extractor.feature_dim, pos_dim=4)  # fmt: skip
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    extractor.save_pretrained(folder / BOX_FEATURE_EXTRACTOR_SUBFOLDER)
    return str(folder), model, processor, extractor


@pytest.fixture(scope="module")
def refer(checkpoint):
    return pipeline(TASK, model=checkpoint[0], device="cpu")


def _assert_same(results, expected):
    """Equal regions and boxes, scores equal up to float noise (results: a dict, a list of them, or a list of lists)."""
    if isinstance(expected, dict):
        assert {key: value for key, value in results.items() if key != "score"} == {
            key: value for key, value in expected.items() if key != "score"}
        assert results["score"] == pytest.approx(expected["score"], abs=1e-5)
        return
    assert isinstance(results, list) and len(results) == len(expected)
    for result, reference in zip(results, expected):
        _assert_same(result, reference)


def _model_scores(checkpoint, image, expression, boxes, box_format="pixel"):
    _, model, processor, extractor = checkpoint
    regions = extractor(image, boxes, box_format=box_format)
    inputs = processor(text=expression, **regions)
    with torch.no_grad():
        return model(**inputs).logits[0].sigmoid()


def test_task_is_registered_and_loads_everything_from_the_folder(refer):
    register_pipelines()
    assert SUPPORTED_TASKS[TASK] is ReferringExpressionPipeline
    assert PIPELINE_REGISTRY.supported_tasks[TASK]["impl"] is ReferringExpressionPipeline
    assert TASK_MODEL_CLASSES[TASK] == (AutoModelForReferringExpression,)
    assert isinstance(refer, ReferringExpressionPipeline) and type(refer.model) is SwitchBertForReferringExpression
    assert isinstance(refer.processor, RegionProcessor) and refer.tokenizer is refer.processor.tokenizer
    assert isinstance(refer.box_feature_extractor, BoxFeatureExtractor)


def test_best_region_matches_the_model_and_round_trips_pixel_boxes(refer, checkpoint):
    result = refer(_scene(), expression="the red square", boxes=BOXES)
    scores = _model_scores(checkpoint, _scene(), "the red square", BOXES)
    best = int(scores.argmax())
    assert set(result) == {"score", "box", "region_index"}
    assert result["region_index"] == best and result["score"] == pytest.approx(float(scores[best]), abs=1e-6)
    assert result["box"] == dict(zip(("xmin", "ymin", "xmax", "ymax"), BOXES[best]))
    assert all(isinstance(value, int) for value in result["box"].values())
    # normalised input boxes: the same region, returned in pixels
    normalized = (np.asarray(BOXES, dtype=np.float64) / [128, 96, 128, 96]).tolist()
    again = refer(_scene(), expression="the red square", boxes=normalized, box_format="normalized")
    assert again["region_index"] == best and again["box"] == result["box"]
    assert again["score"] == pytest.approx(result["score"], abs=1e-5)


def test_top_k_lists_the_best_regions_in_order(refer, checkpoint):
    scores = _model_scores(checkpoint, _scene(), "the blue circle", BOXES)
    top3 = refer(_scene(), expression="the blue circle", boxes=BOXES, top_k=3)
    assert [entry["region_index"] for entry in top3] == scores.argsort(descending=True)[:3].tolist()
    assert [entry["score"] for entry in top3] == sorted((entry["score"] for entry in top3), reverse=True)
    assert [entry["box"]["xmin"] for entry in top3] == [BOXES[entry["region_index"]][0] for entry in top3]
    everything = refer(_scene(), expression="the blue circle", boxes=BOXES, top_k=50)  # capped at the regions
    assert len(everything) == len(BOXES) and everything[:3] == top3
    assert refer(_scene(), expression="the blue circle", boxes=BOXES, top_k=1) == [everything[0]]


def test_several_queries_batch_like_one_by_one(refer):
    expressions = ["the red square", "the blue circle", "a big empty corner"]
    one_by_one = [refer(_scene(), expression=text, boxes=BOXES, top_k=2) for text in expressions]
    _assert_same(refer(_scene(), expression=expressions, boxes=BOXES, top_k=2), one_by_one)
    _assert_same(refer(_scene(), expression=expressions, boxes=BOXES, top_k=2, batch_size=3), one_by_one)
    # dicts with different images and different numbers of boxes, two per forward pass (padded regions left out)
    queries = [
        {"image": _scene(), "expression": "the red square", "boxes": BOXES},
        {"image": _scene(flip=True), "expression": "the blue circle", "boxes": BOXES[:2]},
        {"image": _scene(flip=True), "expression": "the red square", "boxes": BOXES[2:]},
    ]
    alone = [refer(**query, top_k=None) for query in queries]
    batched = refer(queries, batch_size=2)
    _assert_same(batched, alone)
    assert batched[2]["region_index"] < 3  # an index into that query's own 3 boxes


def test_precomputed_regions_give_the_same_answer(refer, checkpoint):
    regions = checkpoint[3](_scene(), BOXES, return_tensors="np")
    from_boxes = refer(_scene(), expression="the red square", boxes=BOXES, top_k=2)
    precomputed = refer(expression="the red square", visual_feats=regions["visual_feats"][0],
                        visual_pos=regions["visual_pos"][0], image_size=(128, 96), top_k=2)  # fmt: skip
    _assert_same(precomputed, from_boxes)


def test_pipeline_save_pretrained_round_trip(refer, tmp_path):
    refer.save_pretrained(tmp_path / "saved")
    again = pipeline(TASK, model=str(tmp_path / "saved"), device="cpu")
    expected = refer(_scene(), expression="the blue circle", boxes=BOXES, top_k=3)
    _assert_same(again(_scene(), expression="the blue circle", boxes=BOXES, top_k=3), expected)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"expression": "the red square"}, ValueError, "needs candidate regions: `boxes`"),
        ({"expression": "the red square", "boxes": []}, ValueError, "`boxes` is empty"),
        ({"expression": "the red square", "boxes": [[0, 0, 10, 10], [100, 50, 200, 90]]}, ValueError,
         r"boxes\[1\] = \[100, 50, 200, 90\] lies outside the 128x96 image"),
        ({"expression": "the red square", "boxes": [[0, 0, 1.5, 0.5]], "box_format": "normalized"}, ValueError,
         r"lies outside \[0, 1\]"),
        ({"expression": "  ", "boxes": BOXES}, ValueError, "`expression` must be a non-empty string"),
        ({"expression": ["the red square", ""], "boxes": BOXES}, ValueError, r"`expression\[1\]` must be a non-empty"),
        ({"boxes": BOXES}, ValueError, "needs `expression`"),
        ({"expression": 3, "boxes": BOXES}, TypeError, "`expression` must be a string"),
        ({"expression": "the red square", "boxes": BOXES, "top_k": 0}, ValueError, "`top_k` must be a positive int"),
        ({"expression": "the red square", "boxes": BOXES, "colour": "red"}, TypeError, "unexpected arguments"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(refer, kwargs, error, message):
    with pytest.raises(error, match=message):
        refer(_scene(), **kwargs)


def test_bad_images_and_region_inputs_are_refused(refer, checkpoint):
    float_image = Image.fromarray(np.zeros((96, 128), dtype=np.float32), mode="F")
    with pytest.raises(ValueError, match="`image` is a PIL image in mode 'F'"):
        refer(float_image, expression="the red square", boxes=BOXES)
    with pytest.raises(ValueError, match="needs an image: `image` is missing"):
        refer(expression="the red square", boxes=BOXES)
    regions = checkpoint[3](_scene(), BOXES, return_tensors="np")
    feats, pos = regions["visual_feats"][0], regions["visual_pos"][0]
    with pytest.raises(ValueError, match=r"`image_size` \(width, height\) is needed"):
        refer(expression="the red square", visual_feats=feats, visual_pos=pos)
    with pytest.raises(ValueError, match="not both"):
        refer(_scene(), expression="the red square", boxes=BOXES, visual_feats=feats, visual_pos=pos)
    with pytest.raises(ValueError, match="`visual_pos` is missing"):
        refer(expression="the red square", visual_feats=feats, image_size=(128, 96))
    with pytest.raises(ValueError, match="visual_feats"):  # the processor checks feat_dim against the model
        refer(expression="the red square", visual_feats=feats[:, :10], visual_pos=pos, image_size=(128, 96))


def test_a_model_without_a_referring_head_is_refused(checkpoint):
    config = checkpoint[1].config
    qa_model = SwitchBertForQuestionAnswering(SwitchBertConfig(**{**config.to_dict(), "num_labels": 3}))
    with pytest.raises(ValueError, match="needs a referring-expression head"):
        pipeline(TASK, model=qa_model, processor=checkpoint[2], device="cpu")
    with pytest.raises(ValueError, match="needs a `hf_vl.regions.RegionProcessor`"):
        pipeline(TASK, model=checkpoint[1], device="cpu")  # a model instance: nothing to load a processor from
