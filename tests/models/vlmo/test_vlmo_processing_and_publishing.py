"""VLMo around the model: the processor, publishing with code (local Hub server, fresh process without hf_vl),
transformers' own zero-shot image classification pipeline, and a tiny dual encoder that learns to retrieve."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, AutoTokenizer, pipeline

from hf_vl import VlmoConfig, VlmoForImageAndTextRetrieval, VlmoImageProcessor, VlmoProcessor
from hf_vl.hub import save_for_hub
from hf_vl.testing import hub_env, run_python
from hf_vl.training import local_pretrained_path

NO_HF_VL = "        import sys; sys.modules['hf_vl'] = None\n"
LABELS = ["a red circle", "a green square", "a blue triangle"]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(local_pretrained_path("minilm"))  # BERT uncased WordPiece


@pytest.fixture(scope="module")
def processor(tokenizer):
    return VlmoProcessor(VlmoImageProcessor(size={"height": 32, "width": 32}), tokenizer)


def _tiny_retrieval(vocab_size, seed=0):
    torch.manual_seed(seed)
    config = VlmoConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, vl_ffn_start_layer=1, image_size=32, max_text_len=40,
                        max_relative_text_length=40, drop_path_rate=0.0, embedding_dropout_prob=0.0)
    return VlmoForImageAndTextRetrieval(config).eval()


def _image(seed=0, size=(48, 40)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def test_processor_defaults_square_bicubic_half_normalisation(processor):
    image = _image()
    out = processor(images=image, text="a blue circle", return_tensors="pt")
    assert out["input_ids"].shape == (1, 40)  # the original pads to max_text_len
    assert out["attention_mask"].sum() == 5  # [CLS] a blue circle [SEP]
    expected = np.asarray(image.resize((32, 32), Image.BICUBIC), dtype=np.float32) / 255.0
    expected = torch.from_numpy((expected - 0.5) / 0.5).permute(2, 0, 1)[None]
    torch.testing.assert_close(out["pixel_values"], expected, atol=1e-5, rtol=0)
    longest = processor(images=[image, image], text=["a", "a blue circle"], padding="longest", return_tensors="pt")
    assert longest["input_ids"].shape == (2, 5)


def test_processor_round_trips_through_auto_processor(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is VlmoProcessor and type(loaded.image_processor) is VlmoImageProcessor
    image = _image(1)
    for key, value in processor(images=image, text="two shapes", return_tensors="pt").items():
        assert torch.equal(loaded(images=image, text="two shapes", return_tensors="pt")[key], value), key


def test_variable_length_text_gives_the_same_embeddings_as_max_length_padding(processor, tokenizer):
    model = _tiny_retrieval(tokenizer.vocab_size)
    image = _image(2)
    with torch.no_grad():
        padded = model(**processor(images=[image] * 3, text=LABELS, return_tensors="pt"))
        longest = model(**processor(images=[image] * 3, text=LABELS, padding="longest", return_tensors="pt"))
    torch.testing.assert_close(padded.logits_per_image, longest.logits_per_image, atol=1e-5, rtol=0)


def test_zero_shot_pipeline_of_transformers_with_a_saved_folder(processor, tokenizer, tmp_path):
    model = _tiny_retrieval(tokenizer.vocab_size)
    save_for_hub(model, str(tmp_path), processor=processor)
    classifier = pipeline("zero-shot-image-classification", model=str(tmp_path))
    assert type(classifier.model) is VlmoForImageAndTextRetrieval
    image = _image(3)
    results = classifier(image, candidate_labels=["circle", "square", "triangle"])
    texts = [f"This is a photo of {label}." for label in ("circle", "square", "triangle")]
    with torch.no_grad():
        inputs = tokenizer(texts, padding=True, return_tensors="pt")
        logits = model(**inputs, **processor.image_processor(image, return_tensors="pt")).logits_per_image[0]
    expected = dict(zip(["circle", "square", "triangle"], logits.softmax(-1).tolist()))
    assert [r["label"] for r in results] == sorted(expected, key=expected.get, reverse=True)
    for result in results:
        assert result["score"] == pytest.approx(expected[result["label"]], abs=1e-5)


def test_fill_mask_and_image_classification_pipelines_of_transformers_with_saved_folders(processor, tokenizer, tmp_path):
    """The stage-2 text model and the image encoder as transformers' own pipelines see them: `fill-mask` through the
    L-FFN path (`VlmoForMaskedLM`), `image-classification` through the V-FFN path (`VlmoForImageClassification`);
    each pipeline's scores are the model's own softmax."""
    from hf_vl import VlmoForImageClassification, VlmoForMaskedLM

    config = dict(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, vl_ffn_start_layer=1, image_size=32, drop_path_rate=0.0,
                  id2label={0: "circle", 1: "rectangle", 2: "triangle"},
                  label2id={"circle": 0, "rectangle": 1, "triangle": 2})  # fmt: skip
    torch.manual_seed(0)
    mlm = VlmoForMaskedLM(VlmoConfig(**config)).eval()
    save_for_hub(mlm, str(tmp_path / "mlm"), processor=processor)
    fill = pipeline("fill-mask", model=str(tmp_path / "mlm"))
    assert type(fill.model) is VlmoForMaskedLM
    predictions = fill("a blue [MASK] .", top_k=3)
    inputs = tokenizer("a blue [MASK] .", return_tensors="pt")
    with torch.no_grad():
        mask_position = inputs["input_ids"][0].tolist().index(tokenizer.mask_token_id)
        probabilities = mlm(**inputs).logits[0, mask_position].softmax(-1)
    top = probabilities.topk(3)
    assert [p["token"] for p in predictions] == top.indices.tolist()
    assert [p["score"] for p in predictions] == pytest.approx(top.values.tolist(), abs=1e-6)

    classifier_model = VlmoForImageClassification(VlmoConfig(**config)).eval()
    save_for_hub(classifier_model, str(tmp_path / "classifier"), processor=processor)
    classify = pipeline("image-classification", model=str(tmp_path / "classifier"))
    image = _image(4)
    results = classify(image)
    with torch.no_grad():
        probabilities = classifier_model(**processor.image_processor(image, return_tensors="pt")).logits[0].softmax(-1)
    expected = dict(zip(["circle", "rectangle", "triangle"], probabilities.tolist()))
    assert [r["label"] for r in results] == sorted(expected, key=expected.get, reverse=True)
    assert [r["score"] for r in results] == pytest.approx(sorted(expected.values(), reverse=True), abs=1e-6)


def test_push_with_code_loads_with_trust_remote_code_in_fresh_process(local_hub, processor, tokenizer, tmp_path):
    repo = local_hub.new_repo_id("vlmo-retrieval")
    env = hub_env(local_hub, hf_home=tmp_path / "hf_home")
    minilm = local_pretrained_path("minilm")
    run_python(
        f"""
        import torch, numpy as np
        from PIL import Image
        from transformers import AutoTokenizer
        from hf_vl import VlmoConfig, VlmoForImageAndTextRetrieval, VlmoImageProcessor, VlmoProcessor
        from hf_vl.hub import push_to_hub_with_code
        torch.manual_seed(0)
        tokenizer = AutoTokenizer.from_pretrained({minilm!r})
        config = VlmoConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=37, vl_ffn_start_layer=1, image_size=32,
                            max_text_len=40, max_relative_text_length=40, num_labels=3)
        model = VlmoForImageAndTextRetrieval(config).eval()
        processor = VlmoProcessor(VlmoImageProcessor(size={{"height": 32, "width": 32}}), tokenizer)
        push_to_hub_with_code(model, {repo!r}, processor=processor, commit_message="VLMo with code")
        image = Image.fromarray((np.arange(40 * 48 * 3) % 255).reshape(40, 48, 3).astype("uint8"))
        inputs = processor(images=[image] * 3, text={LABELS!r}, return_tensors="pt")
        with torch.no_grad():
            torch.save({{"inputs": dict(inputs), "logits": model(**inputs).logits_per_image}}, {str(tmp_path / "ref.pt")!r})
        """,
        env=env,
        cwd=tmp_path,
    )
    files = set(local_hub.list_files(repo))
    assert {"model.safetensors", "config.json", "modeling_vlmo.py", "configuration_vlmo.py", "processing_vlmo.py",
            "image_processing_vlmo.py", "processor_config.json"} <= files
    auto_map = json.loads(local_hub.read_file(repo, "config.json"))["auto_map"]
    assert auto_map["AutoModelForZeroShotImageClassification"] == "modeling_vlmo.VlmoForImageAndTextRetrieval"
    assert auto_map["AutoModelForVisualQuestionAnswering"] == "modeling_vlmo.VlmoForQuestionAnswering"
    assert auto_map["AutoModelForMaskedLM"] == "modeling_vlmo.VlmoForMaskedLM"
    assert auto_map["AutoModel"] == "modeling_vlmo.VlmoModel"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env.pop("PYTHONPATH", None)
    run_python(
        NO_HF_VL
        + f"""        import numpy as np, torch
        from PIL import Image
        from transformers import AutoModel, AutoModelForVisualQuestionAnswering, AutoModelForZeroShotImageClassification
        from transformers import AutoProcessor, pipeline
        model = AutoModelForZeroShotImageClassification.from_pretrained({repo!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert type(model).__name__ == "VlmoForImageAndTextRetrieval"
        processor = AutoProcessor.from_pretrained({repo!r}, trust_remote_code=True)
        image = Image.fromarray((np.arange(40 * 48 * 3) % 255).reshape(40, 48, 3).astype("uint8"))
        inputs = processor(images=[image] * 3, text={LABELS!r}, return_tensors="pt")
        ref = torch.load({str(tmp_path / "ref.pt")!r})
        for key, value in ref["inputs"].items():
            assert torch.equal(inputs[key], value), key
        with torch.no_grad():
            torch.testing.assert_close(model(**inputs).logits_per_image, ref["logits"], atol=1e-5, rtol=0)
        # the fusion heads come from the same checkpoint (full auto_map); their new heads are freshly initialised
        vqa = AutoModelForVisualQuestionAnswering.from_pretrained({repo!r}, trust_remote_code=True)
        assert type(vqa).__name__ == "VlmoForQuestionAnswering"
        assert type(AutoModel.from_pretrained({repo!r}, trust_remote_code=True)).__name__ == "VlmoModel"
        classifier = pipeline("zero-shot-image-classification", model={repo!r}, trust_remote_code=True)
        results = classifier(image, candidate_labels=["circle", "square"])
        assert sorted(r["label"] for r in results) == ["circle", "square"]
        assert abs(sum(r["score"] for r in results) - 1) < 1e-5
        print("REMOTE CODE OK")
        """,
        env=env,
        cwd=elsewhere,
    )


def test_tiny_dual_encoder_learns_to_retrieve_its_captions():
    """A contrastive fine-tune of 6 (image, caption) pairs: recall@1 must go from chance to perfect both ways.
    (From scratch, the tiny model needs a larger init scale than VLMo's 0.02 to separate its inputs.)"""
    torch.manual_seed(0)
    config = VlmoConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, vl_ffn_start_layer=1, image_size=32, max_text_len=8,
                        max_relative_text_length=8, drop_path_rate=0.0, embedding_dropout_prob=0.0,
                        initializer_range=0.2)
    model = VlmoForImageAndTextRetrieval(config).train()
    colours = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 230, 30), (30, 220, 220), (220, 30, 220)]
    rng = np.random.default_rng(0)
    noisy = [np.clip(np.array(c, dtype=np.float32) + rng.normal(0, 10, (32, 32, 3)), 0, 255) for c in colours]
    pixels = torch.stack([torch.from_numpy((image / 127.5 - 1).astype(np.float32)).permute(2, 0, 1) for image in noisy])
    input_ids = torch.tensor([[1, 5, 10 + index, 7, 2] for index in range(6)])  # "[CLS] a <colour> image [SEP]"
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            first = model(input_ids=input_ids, pixel_values=pixels, return_loss=True)
        for _ in range(50):
            loss = model(input_ids=input_ids, pixel_values=pixels, return_loss=True).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        out = model(input_ids=input_ids, pixel_values=pixels, return_loss=True)
    assert first.logits_per_image.argmax(1).tolist() != list(range(6))
    assert out.loss.item() < 0.1 * first.loss.item()
    assert out.logits_per_image.argmax(1).tolist() == list(range(6))
    assert out.logits_per_text.argmax(1).tolist() == list(range(6))


def test_retrieval_scaling_benchmark_scores_every_pair():
    """`benchmarks/vlmo_retrieval_scaling.py` compares like with like: both give the (images x texts) matrix."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[3] / "benchmarks" / "vlmo_retrieval_scaling.py"
    spec = importlib.util.spec_from_file_location("vlmo_retrieval_scaling", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    torch.manual_seed(0)
    config = VlmoConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, vl_ffn_start_layer=1, image_size=32, max_text_len=8,
                        max_relative_text_length=8)
    from hf_vl import VlmoForPreTraining

    model = VlmoForPreTraining(config).eval()
    input_ids, pixel_values = torch.randint(3, 99, (3, 6)), torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        fusion = bench.fusion_scores(model, input_ids, pixel_values, batch_size=4)
        dual = bench.dual_encoder_scores(model, input_ids, pixel_values, batch_size=2)
        pair = model.itm_score(model.vlmo(input_ids=input_ids[2:3], pixel_values=pixel_values[1:2]).pooler_output)
        text = model.vlmo.get_text_features(input_ids[2:3]).pooler_output
        image = model.vlmo.get_image_features(pixel_values[1:2]).pooler_output
    assert fusion.shape == dual.shape == (3, 3)
    torch.testing.assert_close(fusion[1, 2], pair[0, 1])
    torch.testing.assert_close(dual[1, 2], (model.vlmo.logit_scale.exp() * image @ text.t())[0, 0])


def test_hf_vl_vqa_pipeline_answers_with_a_vlmo_checkpoint(processor, tokenizer, tmp_path):
    from hf_vl import VlmoForQuestionAnswering

    torch.manual_seed(0)
    answers = ["yes", "no", "circle", "square"]
    config = VlmoConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, vl_ffn_start_layer=1, image_size=32,
                        id2label=dict(enumerate(answers)), label2id={a: i for i, a in enumerate(answers)})
    model = VlmoForQuestionAnswering(config).eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    vqa = pipeline("vl-question-answering", model=str(tmp_path))
    image = _image(4)
    results = vqa(image=image, question="what shape is it?", top_k=2)
    with torch.no_grad():
        logits = model(**processor(images=image, text="what shape is it?", return_tensors="pt")).logits[0]
    top = logits.topk(2)
    assert [r["answer"] for r in results] == [answers[i] for i in top.indices.tolist()]
    assert results[0]["score"] == pytest.approx(torch.sigmoid(top.values[0]).item(), abs=1e-5)


def test_processor_checks_counts_and_groups_nlvr2_pairs(processor):
    images = [_image(5), _image(6)]
    with pytest.raises(ValueError, match="same number of examples"):
        processor(images=images, text=["one text"], return_tensors="pt")
    with pytest.raises(ValueError, match="at least one input"):
        processor(return_tensors="pt")
    pairs = processor(images=[images, images[::-1]], text=["left is noisier", "right is noisier"], return_tensors="pt")
    assert pairs["pixel_values"].shape == (2, 2, 3, 32, 32)
    single = processor(images=images[1], return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(pairs["pixel_values"][0, 1], single)
    torch.testing.assert_close(pairs["pixel_values"][1, 0], single)
    batched = processor(images=np.stack([np.asarray(i) for i in images]), text=["a", "b"], return_tensors="pt")
    assert batched["pixel_values"].shape == (2, 3, 32, 32)


def test_hf_vl_image_text_retrieval_pipeline_scores_with_vlmo_itm(processor, tokenizer, tmp_path):
    """A VLMo pre-training checkpoint ranks candidates with its fusion ITM head in hf_vl's retrieval pipeline."""
    from hf_vl import VlmoForPreTraining

    torch.manual_seed(0)
    config = VlmoConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, vl_ffn_start_layer=1, image_size=32, initializer_range=0.2)
    model = VlmoForPreTraining(config).eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    retrieval = pipeline("image-text-retrieval", model=str(tmp_path))
    image = _image(7)
    results = retrieval(image, candidate_texts=LABELS)
    with torch.no_grad():
        itm = model(**processor(images=[image] * 3, text=LABELS, return_tensors="pt")).itm_logits
    probabilities = torch.sigmoid(itm[:, 1] - itm[:, 0]).tolist()
    expected = sorted(zip(LABELS, probabilities), key=lambda pair: -pair[1])
    assert [r["text"] for r in results] == [text for text, _ in expected]
    for result, (_, probability) in zip(results, expected):
        assert result["probability"] == pytest.approx(probability, abs=1e-5)


def test_pretraining_with_the_trainer_learns_itc_and_itm(tokenizer, tmp_path):
    """ITC + ITM (hard negatives) + whole-word MLM with the Trainer on 6 coloured images and their captions."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from hf_vl import VlmoForPreTraining
    from hf_vl.data import DataCollatorForVLMaskedLM

    torch.manual_seed(0)
    config = VlmoConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, vl_ffn_start_layer=1, image_size=32, max_relative_text_length=8,
                        drop_path_rate=0.0, embedding_dropout_prob=0.0, initializer_range=0.2)
    model = VlmoForPreTraining(config)
    names = ["red", "green", "blue", "yellow", "cyan", "magenta"]
    colours = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 230, 30), (30, 220, 220), (220, 30, 220)]
    rng = np.random.default_rng(0)
    pixels = [((np.clip(np.array(c, dtype=np.float32) + rng.normal(0, 10, (32, 32, 3)), 0, 255) / 127.5 - 1)
               .transpose(2, 0, 1).astype(np.float32)) for c in colours]
    text = tokenizer([f"a {name} image" for name in names], padding="max_length", max_length=8)
    dataset = Dataset.from_dict({"input_ids": text["input_ids"], "attention_mask": text["attention_mask"],
                                 "pixel_values": [p.tolist() for p in pixels]}).with_format("torch")
    masking = DataCollatorForVLMaskedLM(tokenizer, whole_word_mask=True, mlm_probability=0.15, seed=0)

    def collate(features):
        return {**masking(features), "return_loss": True}

    def evaluate():
        model.eval()
        with torch.no_grad():
            batch = {"input_ids": torch.tensor(text["input_ids"]), "attention_mask": torch.tensor(text["attention_mask"]),
                     "pixel_values": torch.from_numpy(np.stack(pixels))}
            return model(**batch, return_loss=True)

    before = evaluate()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=120, per_device_train_batch_size=6, learning_rate=3e-3,
                             report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True,
                             remove_unused_columns=False, logging_steps=1000)
    Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate).train()
    after = evaluate()
    assert after.itc_loss < 0.2 * before.itc_loss
    assert after.logits_per_image.argmax(1).tolist() == list(range(6))
    # ITM: positives (first 6 rows) now score "match" above the hardest negatives
    match = after.itm_logits[:, 1] - after.itm_logits[:, 0]
    assert after.itm_loss < before.itm_loss and match[:6].min() > match[6:].max()
