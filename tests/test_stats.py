"""edgeseg.eval.stats: bootstrap intervals, paired comparisons, Boundary IoU, the load warning."""

import time

import numpy as np
import pytest

from edgeseg.eval.stats import (
    ImageScores,
    bootstrap_iou,
    boundary_counts,
    contour_band,
    load_warning,
    median_ci95,
    paired_difference,
    resample_weights,
)


def _one_class(p: np.ndarray, union: float = 10_000.0):
    """Per-image counts of one class whose per-image IoU is ``p`` over equal unions: the summed IoU is mean(p)."""
    union_a = np.full((len(p), 1), union)
    return p[:, None] * union_a, union_a


def test_interval_width_and_coverage_match_the_known_variance():
    rng = np.random.default_rng(1)
    mu, sigma, n = 0.6, 0.1, 60
    se = sigma / np.sqrt(n)
    inter, union = _one_class(rng.normal(mu, sigma, n))
    ci = bootstrap_iou(inter, union, resamples=2000, seed=3)
    width = ci.mean_ci95[1] - ci.mean_ci95[0]
    assert width == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert ci.per_class_ci95[0] == pytest.approx(ci.mean_ci95)
    # coverage over independent data sets: about 95 % of the intervals hold the true mean
    hits = 0
    for k in range(200):
        inter, union = _one_class(np.random.default_rng(100 + k).normal(mu, sigma, n))
        lo, hi = bootstrap_iou(inter, union, resamples=400, seed=k).mean_ci95
        hits += lo <= mu <= hi
    assert 0.88 <= hits / 200 <= 0.99


def test_intervals_are_seeded_and_absent_classes_have_none():
    rng = np.random.default_rng(0)
    inter = rng.integers(0, 50, (30, 3)).astype(float)
    union = inter + rng.integers(1, 50, (30, 3))
    inter[:, 2] = union[:, 2] = 0  # class 2 never occurs
    a, b = bootstrap_iou(inter, union, seed=7), bootstrap_iou(inter, union, seed=7)
    assert a.mean_ci95 == b.mean_ci95
    assert a.per_class[2] is None and a.per_class_ci95[2] is None
    assert a.mean == pytest.approx(np.mean(inter[:, :2].sum(0) / union[:, :2].sum(0)))
    assert a.mean_ci95[0] <= a.mean <= a.mean_ci95[1]


def test_resampling_101_images_1000_times_is_fast():
    rng = np.random.default_rng(0)
    inter = rng.integers(0, 5000, (101, 11)).astype(float)
    union = inter + rng.integers(1, 5000, (101, 11))
    t0 = time.perf_counter()
    bootstrap_iou(inter, union, resamples=1000)
    paired_difference((inter, union), (inter * 0.99, union))
    assert time.perf_counter() - t0 < 2.0
    w = resample_weights(101, 1000)
    assert w.shape == (1000, 101) and (w.sum(1) == 101).all()


def _street(n: int, seed: int = 0):
    """Per-image (inter, union) of 11 classes with image-to-image variation, like CamVid val."""
    rng = np.random.default_rng(seed)
    union = rng.integers(2_000, 40_000, (n, 11)).astype(float)
    iou = np.clip(rng.normal(0.65, 0.15, (n, 11)), 0.05, 0.98)
    return iou * union, union


def test_a_consistent_tiny_difference_is_a_tie():
    inter, union = _street(101)
    shifted = inter - 0.00002 * union  # 0.002 points lower on every image: real, and irrelevant
    d = paired_difference((inter, union), (shifted, union))
    assert d.ci95[1] < 0  # consistent: the interval excludes zero...
    assert d.verdict == "tie"  # ...but it is below the margin
    assert "a tie" in d.text()
    same = paired_difference((inter, union), (inter, union))
    assert same.verdict == "tie" and same.difference == 0


def test_a_planted_half_point_drop_on_101_images_is_called_a_drop():
    inter, union = _street(101)
    rng = np.random.default_rng(5)
    # 0.5 points lower on average, varying from image to image (some images lose more, some nothing)
    loss = np.clip(rng.normal(0.005, 0.004, inter.shape), 0, None) * union
    d = paired_difference((inter, union), (inter - loss, union))
    assert d.difference == pytest.approx(-0.005, abs=0.0015)
    assert d.verdict == "worse" and d.ci95[1] < 0
    assert "lower" in d.text()
    up = paired_difference((inter - loss, union), (inter, union))
    assert up.verdict == "better"


def test_five_images_are_too_few_to_tell_apart():
    inter, union = _street(5)
    d = paired_difference((inter, union), (inter * 0.9, union))
    assert d.verdict == "too few images"
    assert "too few images to tell apart" in d.text()


def test_paired_needs_the_same_images():
    a, b = _street(10), _street(11)
    with pytest.raises(ValueError, match="same images"):
        paired_difference(a, b)


def test_contour_band_includes_the_frame_and_edges():
    labels = np.zeros((20, 20), dtype=np.uint8)
    band = contour_band(labels, 2)
    assert band[:2].all() and band[-2:].all() and band[:, :2].all() and not band[2:-2, 2:-2].any()
    labels[8:12, 8:12] = 1
    band = contour_band(labels, 1)
    assert band[7, 7] and band[8, 8] and band[12, 12] and not band[4, 4]


def test_boundary_iou_is_perfect_for_a_perfect_mask_and_punishes_edge_errors_more():
    label = np.zeros((100, 100), dtype=np.uint8)
    label[30:70, 30:70] = 1
    inter, union = boundary_counts(label, label, 2, None)
    assert (inter == union).all() and (union > 0).all()
    pred = np.roll(label, 2, axis=1)  # object shifted 2 px: a small region error, a large edge error
    inter, union = boundary_counts(pred, label, 2, None)
    region = ((pred == 1) & (label == 1)).sum() / ((pred == 1) | (label == 1)).sum()
    assert inter[1] / union[1] < region - 0.1
    # ignored label pixels are not counted
    label_ign = label.copy()
    label_ign[:, :50] = 255
    inter_i, union_i = boundary_counts(pred, label_ign, 2, 255)
    assert union_i.sum() < union.sum()


def test_image_scores_collect_per_image_counts():
    s = ImageScores(num_classes=2, ignore_index=255)
    label = np.zeros((40, 40), dtype=np.uint8)
    label[10:30, 10:30] = 1
    for k in range(3):
        pred = np.roll(label, k, axis=0)
        cm = np.zeros((2, 2), dtype=np.int64)
        np.add.at(cm, (label.ravel(), pred.ravel()), 1)
        s.add(cm, pred, label, f"img{k}")
    inter, union = s.iou_counts()
    assert inter.shape == (3, 2) and (inter[0] == union[0]).all()
    b_inter, b_union = s.boundary_iou_counts()
    assert b_inter.shape == (3, 2) and b_inter[0, 1] == b_union[0, 1] and b_inter[2, 1] < b_union[2, 1]


def test_load_warning_above_the_core_count_only():
    assert load_warning(1.5, 2) is None and load_warning(None, 2) is None
    text = load_warning(3.6, 2)
    assert "3.6" in text and "2 cores" in text


def test_median_ci95_holds_the_median():
    a = sorted(np.random.default_rng(0).normal(10, 1, 101))
    lo, hi = median_ci95(a)
    assert lo < np.median(a) < hi


def test_linear_time_window_extremes_match_the_naive_ones():
    from edgeseg.eval.stats import _window_extremes

    rng = np.random.default_rng(0)
    view = np.lib.stride_tricks.sliding_window_view
    for _ in range(20):
        h, w = rng.integers(3, 40, 2)
        r = int(rng.integers(1, 12))
        a = rng.integers(0, 6, (h, w)).astype(np.int16)
        lo, hi = _window_extremes(a, r)
        lo_pad, hi_pad = np.pad(a, r, constant_values=-1), np.pad(a, r, constant_values=np.iinfo(np.int16).max)
        assert (lo == view(lo_pad, (2 * r + 1, 2 * r + 1)).min((-1, -2))).all()
        assert (hi == view(hi_pad, (2 * r + 1, 2 * r + 1)).max((-1, -2))).all()
