import numpy as np
import pytest
import torch

from edgeseg.eval.metrics import ConfusionMatrix


def test_miou_against_hand_computed_confusion_matrix():
    # 3 classes, ignore index 9
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 9, 9]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = ConfusionMatrix(3, ignore_index=9)
    cm.update(pred, target)
    # rows = truth, cols = prediction; the two ignored pixels are not counted
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    m = cm.result()
    # IoU_c = TP / (row + col - TP): 1/(2+2-1), 2/(2+3-2), 1/(2+1-1)
    assert m.iou == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert m.miou == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert m.pixel_accuracy == pytest.approx(4 / 6)
    assert m.pixels == 6


def test_absent_class_is_excluded_but_false_positive_class_counts_as_zero():
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([0, 0, 2]), torch.tensor([0, 0, 0]))
    m = cm.result()
    assert m.iou[1] is None and m.iou[3] is None  # never seen: not averaged
    assert m.iou[2] == 0.0  # predicted but absent: a real error
    assert m.miou == pytest.approx((2 / 3 + 0.0) / 2)


def test_accumulates_over_updates_and_rejects_size_mismatch():
    cm = ConfusionMatrix(2)
    for _ in range(3):
        cm.update(np.array([0, 1]), np.array([0, 1]))
    assert cm.matrix.tolist() == [[3, 0], [0, 3]]
    with pytest.raises(ValueError):
        cm.update(np.array([0]), np.array([0, 1]))
