"""The easy-VQA dataset as a ``datasets.DatasetDict``, built offline from the PyPI package ``easy-vqa``.

easy-VQA (Victor Zhou, https://github.com/vzhou842/easy-VQA) holds 64x64 RGB images of one coloured
shape and templated questions about its shape, colour and presence. The package ships the images as
PNG files and the questions as JSON, so building the dataset needs no network:

=========  ======  =========
split      images  questions
=========  ======  =========
train      4,000   38,575
test       1,000   9,673
=========  ======  =========

Every question has exactly one answer out of 13 (:data:`EASY_VQA_ANSWERS`). Rows carry both a
single-label target (``label``) and the sparse soft-score target of multi-label VQA heads
(``answer_ids``, ``answer_scores``; turn them into a dense ``labels`` tensor with
:func:`hf_vl.data.vqa.soft_target_tensor`).
"""

from __future__ import annotations

import functools
import hashlib
import re

import datasets
import numpy as np
import pyarrow as pa

__all__ = [
    "EASY_VQA_ANSWERS",
    "EASY_VQA_NUM_IMAGES",
    "EASY_VQA_NUM_QUESTIONS",
    "EASY_VQA_SPLITS",
    "easy_vqa_answer_vocab",
    "easy_vqa_features",
    "easy_vqa_id2label",
    "easy_vqa_label2id",
    "load_easy_vqa",
]

#: The 13 easy-VQA answers, sorted alphabetically; the index of an answer is its label id.
EASY_VQA_ANSWERS: tuple[str, ...] = (
    "black", "blue", "brown", "circle", "gray", "green", "no",
    "rectangle", "red", "teal", "triangle", "yellow", "yes",
)  # fmt: skip
EASY_VQA_SPLITS: tuple[str, ...] = ("train", "test")
EASY_VQA_NUM_IMAGES: dict[str, int] = {"train": 4000, "test": 1000}
EASY_VQA_NUM_QUESTIONS: dict[str, int] = {"train": 38575, "test": 9673}

# datasets>=4 names the variable-length list feature `List`; 3.x only has `Sequence`.
_ListFeature = getattr(datasets, "List", datasets.Sequence)


def easy_vqa_answer_vocab() -> list[str]:
    """The easy-VQA answer vocabulary: the 13 answers of the ``easy-vqa`` package, sorted.

    Reads the package's ``answers.txt`` and checks it against :data:`EASY_VQA_ANSWERS`.

    Example:
        >>> easy_vqa_answer_vocab()[:3]
        ['black', 'blue', 'brown']
    """
    easy_vqa = _import_easy_vqa()
    vocab = sorted(easy_vqa.get_answers())
    if tuple(vocab) != EASY_VQA_ANSWERS:
        raise RuntimeError(
            f"The installed easy-vqa package lists the answers {vocab}, expected {list(EASY_VQA_ANSWERS)}."
        )
    return vocab


def easy_vqa_id2label() -> dict[int, str]:
    """``{label_id: answer}`` for the easy-VQA answers, ready for ``config.id2label``.

    Example:
        >>> easy_vqa_id2label()[12]
        'yes'
    """
    return dict(enumerate(EASY_VQA_ANSWERS))


def easy_vqa_label2id() -> dict[str, int]:
    """``{answer: label_id}`` for the easy-VQA answers, ready for ``config.label2id``.

    Example:
        >>> easy_vqa_label2id()["no"]
        6
    """
    return {answer: index for index, answer in enumerate(EASY_VQA_ANSWERS)}


def easy_vqa_features() -> datasets.Features:
    """The ``datasets.Features`` of :func:`load_easy_vqa` rows."""
    return datasets.Features(
        {
            "image": datasets.Image(),
            "image_id": datasets.Value("int64"),
            "question_id": datasets.Value("int64"),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "answers": _ListFeature(datasets.Value("string")),
            "label": datasets.ClassLabel(names=list(EASY_VQA_ANSWERS)),
            "answer_ids": _ListFeature(datasets.Value("int64")),
            "answer_scores": _ListFeature(datasets.Value("float32")),
        }
    )


def _import_easy_vqa():
    try:
        import easy_vqa
    except ImportError as error:  # pragma: no cover - easy-vqa is a declared dependency
        raise ImportError("load_easy_vqa needs the `easy-vqa` package: `pip install easy-vqa`.") from error
    return easy_vqa


@functools.cache
def _read_split(split: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...], dict[int, str]]:
    """Questions, answers, image ids and ``{image_id: png path}`` of one split (read once per process)."""
    easy_vqa = _import_easy_vqa()
    if split == "train":
        questions, answers, image_ids = easy_vqa.get_train_questions()
        image_paths = easy_vqa.get_train_image_paths()
    else:
        questions, answers, image_ids = easy_vqa.get_test_questions()
        image_paths = easy_vqa.get_test_image_paths()
    return tuple(questions), tuple(answers), tuple(int(i) for i in image_ids), dict(image_paths)


def _build_split(split: str, max_questions: int | None, seed: int) -> datasets.Dataset:
    questions, answers, image_ids, image_paths = _read_split(split)
    indices = np.arange(len(questions))
    if max_questions is not None and max_questions < len(questions):
        # A seeded subset, kept in the package's original order.
        indices = np.sort(np.random.default_rng(seed).choice(len(questions), size=max_questions, replace=False))
    label2id = easy_vqa_label2id()
    unknown = sorted({answers[i] for i in indices} - set(label2id))
    if unknown:
        raise RuntimeError(f"easy-VQA {split} split holds answers outside the vocabulary: {unknown}.")
    missing = sorted({image_ids[i] for i in indices} - set(image_paths))
    if missing:
        raise RuntimeError(f"easy-VQA {split} split references images without a PNG file: {missing[:10]}.")
    # Arrow columns built directly: per-row feature encoding in Dataset.from_dict takes seconds here.
    answer_ids = [label2id[answers[i]] for i in indices]
    offsets = pa.array(np.arange(len(indices) + 1, dtype=np.int32))
    columns = {
        "image": pa.StructArray.from_arrays(
            [pa.nulls(len(indices), pa.binary()), pa.array([image_paths[image_ids[i]] for i in indices], pa.string())],
            names=["bytes", "path"],
        ),
        "image_id": pa.array([image_ids[i] for i in indices], pa.int64()),
        "question_id": pa.array(indices, pa.int64()),
        "question": pa.array([questions[i] for i in indices], pa.string()),
        "answer": pa.array([answers[i] for i in indices], pa.string()),
        "answers": pa.ListArray.from_arrays(offsets, pa.array([answers[i] for i in indices], pa.string())),
        "label": pa.array(answer_ids, pa.int64()),
        "answer_ids": pa.ListArray.from_arrays(offsets, pa.array(answer_ids, pa.int64())),
        # One trusted answer per question: full credit (see hf_vl.data.vqa.vqa_soft_score).
        "answer_scores": pa.ListArray.from_arrays(offsets, pa.array(np.ones(len(indices), np.float32))),
    }
    features = easy_vqa_features()
    table = pa.Table.from_pydict(columns, schema=features.arrow_schema)
    info = datasets.DatasetInfo(
        features=features,
        description="easy-VQA: templated questions about 64x64 images of a coloured shape.",
        homepage="https://github.com/vzhou842/easy-VQA",
        license="MIT",
    )
    # A fingerprint from the arguments: hashing the table would cost more than building it.
    fingerprint = hashlib.sha256(f"hf_vl-easy_vqa-{split}-{max_questions}-{seed}".encode()).hexdigest()[:16]
    return datasets.Dataset(table, info=info, split=datasets.NamedSplit(split), fingerprint=fingerprint)


def load_easy_vqa(
    split: str | None = None,
    max_questions_per_split: int | None = None,
    seed: int = 0,
) -> datasets.DatasetDict | datasets.Dataset:
    """Build easy-VQA from the installed ``easy-vqa`` package, without network access.

    Columns: ``image`` (``datasets.Image``, decodes to a 64x64 RGB ``PIL.Image``), ``image_id``
    (per split), ``question_id`` (row index in the package's question list), ``question``,
    ``answer``, ``answers`` (the annotator answers: ``[answer]``), ``label`` (``ClassLabel`` id in
    :data:`EASY_VQA_ANSWERS`), ``answer_ids``/``answer_scores`` (sparse soft-score target:
    ``[label]``/``[1.0]``).

    The image column stores the path of the package's PNG file; ``push_to_hub`` embeds the bytes,
    ``save_to_disk`` keeps the path. Building both splits takes about a second.

    Args:
        split: ``"train"`` or ``"test"`` to get that ``Dataset``; ``None`` for a ``DatasetDict`` of both.
        max_questions_per_split: keep a seeded random subset of at most this many questions per
            split (in the original order), for quick runs; ``None`` keeps everything.
        seed: seed of the subset.

    Example:
        >>> ds = load_easy_vqa()
        >>> ds["train"].num_rows, ds["test"].num_rows
        (38575, 9673)
        >>> ds["train"][0]["question"], ds["train"][0]["answer"]
        ('what is the blue shape?', 'rectangle')
        >>> load_easy_vqa("test", max_questions_per_split=100).num_rows
        100
    """
    if split is not None and split not in EASY_VQA_SPLITS:
        raise ValueError(f"`split` must be one of {EASY_VQA_SPLITS} or None, got {split!r}.")
    if max_questions_per_split is not None and (
        isinstance(max_questions_per_split, bool)
        or not isinstance(max_questions_per_split, int)
        or max_questions_per_split < 1
    ):
        raise ValueError(f"`max_questions_per_split` must be a positive int or None, got {max_questions_per_split!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative int, got {seed!r}.")
    if split is not None:
        return _build_split(split, max_questions_per_split, seed)
    return datasets.DatasetDict({name: _build_split(name, max_questions_per_split, seed) for name in EASY_VQA_SPLITS})


EASY_VQA_SHAPES = ("circle", "rectangle", "triangle")
EASY_VQA_COLOURS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")


def easy_vqa_question_type(answer: str) -> str:
    """easy-VQA has no question-type column; the answer tells it: `"yes/no"`, `"shape"` or `"colour"`."""
    return "yes/no" if answer in ("yes", "no") else "shape" if answer in EASY_VQA_SHAPES else "colour"


def _image_descriptions(split: str) -> dict[int, tuple[str, str]]:
    """`{image_id: (colour, shape)}` for the images whose colour and shape their own questions answer.

    Read from the answers: a shape answer ("what shape is this?" -> circle) gives the shape; a colour answer gives
    the colour, and the shape its question names ("what color is the circle?"); a yes/no question about a named
    colour or shape gives it when the answer affirms it ("is there a circle?" -> yes, "is no circle present?" -> no).
    Images for which this leaves the colour or the shape unknown (about 15%) are left out.
    """
    questions, answers, image_ids, _ = _read_split(split)
    colours: dict[int, set] = {}
    shapes: dict[int, set] = {}
    for question, answer, image_id in zip(questions, answers, image_ids):
        words = set(re.findall(r"[a-z]+", question.lower()))
        named_shapes = {shape for shape in EASY_VQA_SHAPES if shape in words}
        if answer in EASY_VQA_SHAPES:
            shapes.setdefault(image_id, set()).add(answer)
        elif answer in EASY_VQA_COLOURS:
            colours.setdefault(image_id, set()).add(answer)
            shapes.setdefault(image_id, set()).update(named_shapes)
        elif (answer == "yes") != bool(words & {"not", "no"}):  # the question's claim holds
            shapes.setdefault(image_id, set()).update(named_shapes)
            colours.setdefault(image_id, set()).update(colour for colour in EASY_VQA_COLOURS if colour in words)
    return {image_id: (next(iter(colours[image_id])), next(iter(shapes[image_id])))
            for image_id in sorted(set(colours) & set(shapes))
            if len(colours[image_id]) == 1 and len(shapes[image_id]) == 1}  # fmt: skip


def load_easy_vqa_captions(split: str | None = None) -> datasets.DatasetDict | datasets.Dataset:
    """An offline image-caption set derived from easy-VQA, for pre-training and retrieval: one row per image whose
    colour and shape its own questions answer (3,395 of the 4,000 train images, 841 of the 1,000 test images), with
    the caption "a <colour> <shape>" (24 distinct captions: 8 colours x 3 shapes). Train and test images are disjoint.

    Columns: ``image`` (``datasets.Image``), ``image_id``, ``caption``, ``colour``, ``shape``.

    Example:
        >>> captions = load_easy_vqa_captions("test")
        >>> captions.num_rows, len(set(captions["caption"]))
        (841, 24)
    """
    if split is not None and split not in EASY_VQA_SPLITS:
        raise ValueError(f"`split` must be one of {EASY_VQA_SPLITS} or None, got {split!r}.")
    if split is None:
        return datasets.DatasetDict({name: load_easy_vqa_captions(name) for name in EASY_VQA_SPLITS})
    described = _image_descriptions(split)
    _, _, _, image_paths = _read_split(split)
    image_ids = [image_id for image_id in described if image_id in image_paths]
    features = datasets.Features({
        "image": datasets.Image(), "image_id": datasets.Value("int64"), "caption": datasets.Value("string"),
        "colour": datasets.Value("string"), "shape": datasets.Value("string"),
    })  # fmt: skip
    return datasets.Dataset.from_dict(
        {
            "image": [image_paths[image_id] for image_id in image_ids],
            "image_id": image_ids,
            "caption": [f"a {described[image_id][0]} {described[image_id][1]}" for image_id in image_ids],
            "colour": [described[image_id][0] for image_id in image_ids],
            "shape": [described[image_id][1] for image_id in image_ids],
        },
        features=features,
        split=datasets.NamedSplit(split),
    )
