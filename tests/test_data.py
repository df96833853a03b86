import numpy as np
import pytest
import torch

from edgeseg.data.datasets import CAMVID, list_split, load_split, read_label
from edgeseg.data.transforms import AugmentConfig, augment_pair, check_input_size, fit_input, logits_to_source, plan_fit
from edgeseg.errors import EdgesegError


def test_reads_shared_camvid_splits(camvid):
    assert len(list_split(camvid, "train")) == 367
    val = list_split(camvid, "val")
    assert len(val) == 101
    label = read_label(val[0].label)
    assert label.shape == (360, 480) and label.dtype == np.uint8
    assert label.max() <= CAMVID.ignore_index


def test_load_split_pairs_images_and_labels(camvid):
    samples, images, labels = load_split(camvid, "val")
    assert images[0].shape == (360, 480, 3) and labels[0].shape == (360, 480)
    assert samples[0].image.stem == samples[0].label.stem


def test_missing_split_is_a_clear_error(tmp_path):
    with pytest.raises(EdgesegError, match="val/images"):
        list_split(tmp_path, "val")


def test_pad_fit_is_exact_and_crops_back():
    fit = plan_fit((360, 480), "pad")
    assert fit.size == (384, 480) and fit.mode == "pad"
    assert "padded to 384x480" in fit.describe()
    x = torch.randn(1, 3, 360, 480)
    xp = fit_input(x, fit)
    assert xp.shape[-2:] == (384, 480) and torch.equal(xp[..., :360, :], x)
    logits = torch.randn(1, 11, 48, 60)
    assert logits_to_source(logits, fit).shape[-2:] == (360, 480)


def test_resize_fit_and_sizes_not_multiple_of_32():
    fit = plan_fit((500, 1000), "resize")
    assert fit.size == (512, 1024) and fit.mode == "resize"
    with pytest.raises(EdgesegError, match="500x1000 is not a multiple of 32.*512x1024"):
        check_input_size((500, 1000))
    assert plan_fit((384, 480), "pad").mode == "none"


def test_augment_pair_shapes_and_ignore_padding():
    gen = torch.Generator().manual_seed(0)
    image = np.full((40, 50, 3), 100, np.uint8)
    label = np.ones((40, 50), np.uint8)
    img, lab = augment_pair(image, label, AugmentConfig(crop=(64, 64), scale=(1.0, 1.0)), gen, ignore_index=11)
    assert img.shape == (3, 64, 64) and lab.shape == (64, 64)
    assert set(lab.unique().tolist()) == {1, 11}  # the padded area is ignored, not a class


def test_gamma_jitter_darkens_and_brightens_within_its_range():
    """Gamma exponents in [1/(1+g), 1+g], log-uniform: mid-grey moves both ways, black and white stay put, and the
    label never changes."""
    image = np.full((32, 32, 3), 128, np.uint8)
    image[0, 0], image[0, 1] = 0, 255
    label = np.arange(32 * 32, dtype=np.int64).reshape(32, 32).astype(np.uint8)
    cfg = AugmentConfig(crop=(32, 32), scale=(1.0, 1.0), flip=False, brightness=0, contrast=0, saturation=0, gamma=1.0)
    seen = []
    for seed in range(40):
        img, lab = augment_pair(image, label, cfg, torch.Generator().manual_seed(seed), ignore_index=255)
        assert torch.equal(lab, torch.from_numpy(label).long())
        assert float(img[0, 0, 0]) == 0.0 and float(img[0, 0, 1]) == pytest.approx(255.0)
        seen.append(float(img[0, 5, 5]))
    grey = 128 / 255
    assert min(seen) >= 255 * grey**2 - 1e-3 and max(seen) <= 255 * grey**0.5 + 1e-3  # g = 1: exponents 0.5 .. 2
    assert min(seen) < 110 and max(seen) > 150  # both ways
    plain = AugmentConfig(crop=(32, 32), scale=(1.0, 1.0), flip=False, brightness=0, contrast=0, saturation=0)
    img, _ = augment_pair(image, label, plain, torch.Generator().manual_seed(0), ignore_index=255)
    assert float(img[0, 5, 5]) == 128.0  # gamma 0: off
