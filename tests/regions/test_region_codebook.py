"""RegionCodebook: k-means region classes as masked-region-modelling targets where no detector gives classes."""

import numpy as np
import pytest
import torch

from hf_vl.regions import GridFeatureExtractor, RegionCodebook


def _clusters(num_per_cluster=60, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0, 5.0], [6.0, 0.0, 0.0], [0.0, 6.0, -3.0]])
    points = centres.repeat_interleave(num_per_cluster, 0) + 0.3 * torch.randn(3 * num_per_cluster, 3, generator=generator)
    return points, torch.arange(3).repeat_interleave(num_per_cluster)


def test_fit_recovers_separated_clusters_and_assigns_ids_and_distributions():
    points, truth = _clusters()
    codebook = RegionCodebook.fit(points, num_classes=3, seed=0)
    ids = codebook.assign(points)
    # the clusters are found up to a permutation: each true cluster maps to one class
    mapping = {int(t): set(ids[truth == t].tolist()) for t in range(3)}
    assert all(len(classes) == 1 for classes in mapping.values()) and len(set.union(*mapping.values())) == 3
    probs = codebook.distribution(points.view(9, 20, 3))
    assert probs.shape == (9, 20, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(9, 20))
    assert torch.equal(probs.argmax(-1).flatten(), ids)  # the soft target peaks on the nearest class
    assert float(probs.max(-1).values.mean()) > 0.9  # well-separated: confident targets
    flatter = codebook.distribution(points, temperature=100.0)
    assert float(flatter.max(-1).values.mean()) < float(probs.max(-1).values.mean())
    masked = codebook.assign(points[:4].view(1, 4, 3), visual_attention_mask=torch.tensor([[1, 1, 0, 1]]))
    assert masked[0, 2] == -100 and (masked[0, [0, 1, 3]] >= 0).all()


def test_fit_is_seeded_and_save_load_round_trips(tmp_path):
    points, _ = _clusters(seed=1)
    first = RegionCodebook.fit(points.numpy(), num_classes=4, seed=3)
    second = RegionCodebook.fit(points, num_classes=4, seed=3)
    torch.testing.assert_close(first.centroids, second.centroids)
    first.save_pretrained(tmp_path)
    loaded = RegionCodebook.from_pretrained(tmp_path)
    assert (loaded.num_classes, loaded.feature_dim, loaded.scale) == (4, 3, first.scale)
    torch.testing.assert_close(loaded.distribution(points), first.distribution(points))
    with pytest.raises(FileNotFoundError, match="region_codebook.json"):
        RegionCodebook.from_pretrained(tmp_path / "missing")


def test_codebook_on_grid_regions_separates_easy_vqa_cells():
    """On real grid descriptors the classes are not degenerate: empty cells and shape cells get different classes."""
    from hf_vl.data import load_easy_vqa_captions

    images = [image.convert("RGB") for image in load_easy_vqa_captions("train").select(range(64))["image"]]
    regions = GridFeatureExtractor(grid_size=4, pos_dim=4)(images)
    feats = regions["visual_feats"]
    codebook = RegionCodebook.fit(feats.flatten(0, 1), num_classes=8, seed=0)
    ids = codebook.assign(feats)
    assert len(set(ids.flatten().tolist())) >= 6  # most classes used
    foreground = feats[..., 6] > 0.5  # the foreground fraction of the descriptor (index 6)
    empty_classes = set(ids[feats[..., 6] == 0].tolist())
    assert empty_classes and not empty_classes & set(ids[foreground].tolist())


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: RegionCodebook.fit(torch.randn(10, 3), num_classes=1), "num_classes"),
        (lambda: RegionCodebook.fit(torch.randn(3, 3), num_classes=4), "at least as many regions"),
        (lambda: RegionCodebook.fit(torch.tensor([[float("nan"), 0.0]] * 5), num_classes=2), "NaN"),
        (lambda: RegionCodebook.fit(torch.arange(10), num_classes=2), "features"),
        (lambda: RegionCodebook.fit(torch.randn(10, 3), num_classes=2).assign(torch.randn(2, 4)), "feature_dim 3"),
        (lambda: RegionCodebook.fit(torch.randn(10, 3), num_classes=2).distribution(torch.randn(2, 3), 0.0),
         "temperature"),
    ],
)
def test_bad_inputs_name_the_argument(call, error):
    with pytest.raises(ValueError, match=error):
        call()


def test_feature_standardisation_makes_scales_comparable():
    """A pure-noise feature on a 1000x larger scale does not decide the classes: after standardisation the three
    clusters are still found (without it, k-means would split the noise axis)."""
    points, truth = _clusters()
    scaled = torch.cat([points, 1000 * torch.randn(points.shape[0], 1, generator=torch.Generator().manual_seed(5))], 1)
    ids = RegionCodebook.fit(scaled, num_classes=3, seed=0).assign(scaled)
    purity = np.mean([torch.bincount(ids[truth == t], minlength=3).max().item() / (truth == t).sum().item()
                      for t in range(3)])
    assert purity > 0.95, purity
