"""YOLOv4 detection pieces: k-means anchors, box IoU, and the label encoder's targets."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.detection.conftest import ANCHORS, STRIDES
from training.detection.anchors import avg_iou, kmeans_anchors, sizes_at_input, split_anchors
from training.detection.boxes import box_iou
from training.detection.encoder import EncoderConfig, LabelEncoder
from training.detection.letterbox import letterbox_geometry

# --- anchors -----------------------------------------------------------------------------------


def _planted_sizes(seed: int = 0, per_cluster: int = 60):
    rng = np.random.default_rng(seed)
    planted = np.array(
        [
            [12, 16],
            [19, 36],
            [40, 28],
            [36, 75],
            [76, 55],
            [72, 146],
            [142, 110],
            [192, 243],
            [459, 401],
        ],
        dtype=np.float64,
    )
    jitter = np.exp(rng.normal(0.0, 0.04, size=(planted.shape[0], per_cluster, 2)))
    return planted, (planted[:, None, :] * jitter).reshape(-1, 2)


def test_kmeans_recovers_planted_anchor_clusters():
    planted, wh = _planted_sizes()
    fit = kmeans_anchors(wh, k=9, seed=1)
    np.testing.assert_allclose(fit.anchors, planted, rtol=0.03)
    areas = fit.anchors[:, 0] * fit.anchors[:, 1]
    assert np.all(np.diff(areas) > 0)
    assert fit.avg_iou == pytest.approx(avg_iou(wh, fit.anchors), abs=1e-12)
    assert fit.avg_iou > 0.9
    assert fit.per_scale().shape == (3, 3, 2)
    np.testing.assert_array_equal(np.bincount(fit.assignments, minlength=9), [60] * 9)


def test_kmeans_is_reproducible_for_a_seed():
    _, wh = _planted_sizes(seed=3)
    a = kmeans_anchors(wh, k=6, seed=7, n_init=2)
    b = kmeans_anchors(wh, k=6, seed=7, n_init=2)
    np.testing.assert_array_equal(a.anchors, b.anchors)
    assert a.avg_iou == b.avg_iou


def test_avg_iou_is_corner_aligned_iou():
    assert avg_iou([[2.0, 2.0]], [[1.0, 1.0]]) == pytest.approx(0.25)
    assert avg_iou([[1.0, 2.0]], [[2.0, 1.0]]) == pytest.approx(1.0 / 3.0)
    assert avg_iou([[1.0, 2.0], [2.0, 2.0]], [[2.0, 1.0], [2.0, 2.0]]) == pytest.approx(
        (0.5 + 1.0) / 2
    )


def test_kmeans_refuses_too_few_distinct_sizes():
    with pytest.raises(ValueError, match="distinct"):
        kmeans_anchors([[10.0, 10.0]] * 20 + [[5.0, 5.0]] * 20, k=3)


def test_split_anchors_gives_the_finest_scale_the_smallest():
    anchors = np.array([[30, 30], [2, 2], [10, 10], [4, 4], [20, 20], [1, 1]], dtype=float)
    groups = split_anchors(anchors)
    np.testing.assert_array_equal(groups[0], [[1, 1], [2, 2], [4, 4]])
    np.testing.assert_array_equal(groups[1], [[10, 10], [20, 20], [30, 30]])


def test_sizes_at_input_follow_the_letterbox_scale():
    out = sizes_at_input([[100.0, 50.0]], (1636, 1088), 416)
    info = letterbox_geometry(1636, 1088, 416)
    np.testing.assert_allclose(out, [[100.0 * info.scale_x, 50.0 * info.scale_y]])


# --- label encoder -----------------------------------------------------------------------------


def _encoder(num_classes: int = 5, **config) -> LabelEncoder:
    return LabelEncoder(64, STRIDES, ANCHORS, num_classes, EncoderConfig(**config))


def test_encoder_targets_have_the_head_shapes():
    encoder = _encoder(num_classes=5)
    out = encoder.encode_batch([np.zeros((0, 4)), [[1, 1, 9, 9]]], [[], [2]])
    shapes = [t.shape for t in out.targets]
    assert shapes == [(2, 64 // s, 64 // s, 3, 10) for s in STRIDES]
    assert out.gt_boxes.shape == (2, 100, 4)
    assert not out.targets[0][0].any()
    assert encoder.output_shapes[:3] == tuple(s[1:] for s in shapes)


def test_encoder_puts_a_box_at_its_best_anchor_scale_and_centre_cell():
    encoder = _encoder(iou_thresh=1.0)  # best anchor only
    # 20 x 28 is anchor 1 of the stride-16 scale; centre (41, 22) -> column 2, row 1
    box = [31.0, 8.0, 51.0, 36.0]
    out = encoder.encode(np.array([box]), np.array([3]))
    fine, mid, coarse = out.targets
    assert not fine.any() and not coarse.any()
    assert np.count_nonzero(mid[..., 4]) == 1
    np.testing.assert_allclose(mid[1, 2, 1], [41, 22, 20, 28, 1, 0, 0, 0, 1, 0])
    np.testing.assert_allclose(out.gt_boxes[0], box)
    assert not out.gt_boxes[1:].any()


def test_encoder_also_assigns_anchors_above_iou_thresh():
    encoder = _encoder()  # iou_thresh 0.213
    # 16 x 16 at centre (20, 44): best anchor 16x12 (IoU 0.75); 8x8 (0.25), 10x16 (0.625),
    # 20x28 (0.457) and 32x24 (0.333) pass 0.213; 4x6 (0.094) and the coarse ones do not
    out = encoder.encode(np.array([[12.0, 36.0, 28.0, 52.0]]), np.array([0]))
    fine, mid, coarse = out.targets
    assert np.flatnonzero(fine[5, 2, :, 4]).tolist() == [1, 2]
    assert np.flatnonzero(mid[2, 1, :, 4]).tolist() == [0, 1, 2]
    assert fine[..., 4].sum() == 2 and mid[..., 4].sum() == 3 and not coarse.any()


def test_encoder_best_anchor_claim_beats_a_threshold_claim():
    encoder = _encoder()
    # both centred at (5, 8): fine cell row 1, column 0; the 10x16 box owns anchor 2 as its best anchor,
    # the 8x8 box would reach anchor 2 only through the threshold
    boxes = np.array([[0.0, 0.0, 10.0, 16.0], [1.0, 4.0, 9.0, 12.0]])
    out = encoder.encode(boxes, np.array([4, 1]))
    np.testing.assert_allclose(out.targets[0][1, 0, 2, :4], [5, 8, 10, 16])
    assert out.targets[0][1, 0, 2, 5 + 4] == 1
    np.testing.assert_allclose(out.targets[0][1, 0, 1, :4], [5, 8, 8, 8])


def test_encoder_assigns_a_shared_best_anchor_at_both_scales():
    # yolov4-tiny's masks: anchor 81 x 82 serves both the stride-16 and the stride-32 head
    anchors = np.array([[[23, 27], [37, 58], [81, 82]], [[81, 82], [135, 169], [344, 319]]])
    encoder = LabelEncoder(416, (16, 32), anchors, 1, EncoderConfig(iou_thresh=1.0))
    out = encoder.encode(np.array([[100.0, 100.0, 180.0, 184.0]]), np.array([0]))
    assert out.targets[0][8, 8, 2, 4] == 1 and out.targets[1][4, 4, 0, 4] == 1
    assert out.targets[0][..., 4].sum() == 1 and out.targets[1][..., 4].sum() == 1


def test_encoder_rejects_classes_out_of_range():
    with pytest.raises(ValueError, match="classes"):
        _encoder(num_classes=2).encode([[0, 0, 4, 4]], [2])


def test_box_iou_of_disjoint_and_nested_boxes():
    iou = box_iou([[0, 0, 10, 10]], [[20, 20, 30, 30], [0, 0, 5, 10]])
    np.testing.assert_allclose(iou, [[0.0, 0.5]])
