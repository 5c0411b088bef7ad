"""The synthetic Pap image generator: reproducible, well-formed, and graded the way cytology is."""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pytest

from annotation.bethesda import BETHESDA
from annotation.geometry import Box
from annotation.synthetic import (
    SyntheticConfig,
    cluster_crops,
    generate_dataset,
    generate_image,
    image_seed,
)

SMALL = SyntheticConfig.small(192)


def _grey_stats_by_grade(n_images: int, size: int = 160) -> dict[str, np.ndarray]:
    """Per box: (share of nucleus-dark pixels, 2nd-percentile grey / background grey)."""
    config = SyntheticConfig.small(size, clusters_per_image=(1, 1))
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in BETHESDA}
    for seed in range(n_images):
        synthetic = generate_image(seed, config)
        grey = cv2.cvtColor(synthetic.image, cv2.COLOR_RGB2GRAY).astype(np.float64)
        background = np.percentile(grey, 90)
        for box in synthetic.boxes:
            patch = grey[int(box.y):int(np.ceil(box.y2)), int(box.x):int(np.ceil(box.x2))]
            found[box.label].append(
                ((patch < 0.5 * background).mean(), np.percentile(patch, 2) / background)
            )
    return {name: np.array(values) for name, values in found.items()}


@pytest.fixture(scope="module")
def grade_stats() -> dict[str, np.ndarray]:
    return _grey_stats_by_grade(180)


def test_same_seed_gives_identical_image_and_boxes():
    first, second = generate_image(7, SMALL), generate_image(7, SMALL)
    assert first.image.tobytes() == second.image.tobytes()
    assert first.boxes == second.boxes


def test_different_seeds_give_different_images():
    first, second = generate_image(7, SMALL), generate_image(8, SMALL)
    assert first.image.tobytes() != second.image.tobytes()


def test_full_size_image_is_rgb_uint8_of_the_configured_size():
    synthetic = generate_image(3)
    assert synthetic.image.shape == (1088, 1636, 3)
    assert synthetic.image.dtype == np.uint8
    assert (synthetic.width, synthetic.height) == (1636, 1088)
    assert synthetic.boxes


def test_background_is_light_but_not_pure_white():
    image = generate_image(5, SMALL).image
    background = np.percentile(image.reshape(-1, 3), 75, axis=0)
    assert (background > 190).all() and (background < 252).all()


def test_boxes_lie_inside_the_image_with_positive_size_and_bethesda_labels():
    for seed in range(25):
        synthetic = generate_image(seed, SMALL)
        for box in synthetic.boxes:
            assert isinstance(box, Box)
            assert box.validated(synthetic.width, synthetic.height) == box
            assert box.width >= 1 and box.height >= 1
            assert box.label in BETHESDA


def test_boxes_cover_their_clusters_dark_nuclei():
    # outside every box there are only single normal cells: far fewer nucleus-dark pixels
    config = SyntheticConfig.small(256, grades=["HSIL", "SCC"], scattered_cells=(0, 0),
                                   inflammatory_cells=(0, 0))
    synthetic = generate_image(11, config)
    grey = cv2.cvtColor(synthetic.image, cv2.COLOR_RGB2GRAY)
    inside = np.zeros(grey.shape, dtype=bool)
    for box in synthetic.boxes:
        inside[int(box.y):int(np.ceil(box.y2)), int(box.x):int(np.ceil(box.x2))] = True
    dark = grey < 100
    assert dark[inside].sum() > 0
    assert dark[~inside].sum() <= 0.02 * dark.sum()


def test_every_grade_appears_over_a_modest_number_of_images():
    labels = Counter(
        box.label for seed in range(20) for box in generate_image(seed, SMALL).boxes
    )
    assert set(labels) == set(BETHESDA)


def test_grade_mix_restricts_cluster_labels():
    config = SyntheticConfig.small(192, grades="LSIL")
    labels = {box.label for seed in range(6) for box in generate_image(seed, config).boxes}
    assert labels == {"LSIL"}


def test_nuclear_darkness_rises_from_nilm_through_lsil_to_hsil(grade_stats):
    # hyperchromasia: the darkest pixels in the box (relative to the background) get darker
    darkest = {name: values[:, 1].mean() for name, values in grade_stats.items()}
    assert darkest["NILM"] > darkest["ASC-US"] > darkest["LSIL"] > darkest["HSIL"]
    assert darkest["LSIL"] > darkest["ASC-H"] > darkest["HSIL"]
    assert darkest["SCC"] < darkest["LSIL"]


def test_nuclear_area_share_rises_with_grade(grade_stats):
    # nucleus-to-cytoplasm ratio: more of the box is nucleus-dark in higher grades
    share = {name: values[:, 0].mean() for name, values in grade_stats.items()}
    assert share["NILM"] < share["LSIL"] < share["ASC-H"] < share["HSIL"]
    assert share["NILM"] < share["ASC-US"]
    assert share["SCC"] > share["LSIL"]


def test_adjacent_grades_overlap_in_appearance(grade_stats):
    # the task must not be trivial: some ASC-US boxes look darker than some LSIL boxes
    asc_us, lsil = grade_stats["ASC-US"][:, 1], grade_stats["LSIL"][:, 1]
    assert np.percentile(asc_us, 10) < np.percentile(lsil, 90)


def test_full_frame_renderer_draws_the_same_picture():
    config = SyntheticConfig.small(128)
    fast = generate_image(4, config)
    slow = generate_image(4, config, full_frame=True)
    assert np.abs(fast.image.astype(int) - slow.image.astype(int)).max() <= 1
    assert fast.boxes == slow.boxes


def test_generate_dataset_writes_the_images_it_lists(tmp_path):
    config = SyntheticConfig.small(128)
    calls = []
    records = generate_dataset(tmp_path, 3, seed=5, config=config,
                               progress=lambda done, total: calls.append((done, total)))
    assert [r.file_name for r in records] == [f"images/synth_{i:05d}.png" for i in range(3)]
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        f"synth_{i:05d}.png" for i in range(3)
    ]
    for index, record in enumerate(records):
        written = cv2.imread(str(tmp_path / record.file_name), cv2.IMREAD_COLOR)
        assert written.shape == (record.height, record.width, 3)
        expected = generate_image(image_seed(5, index), config)
        assert np.array_equal(cv2.cvtColor(written, cv2.COLOR_BGR2RGB), expected.image)
        assert record.boxes == expected.boxes
    assert not (tmp_path / "annotations.json").exists()


def test_dataset_image_seeds_differ_between_images_and_dataset_seeds():
    seeds = {image_seed(s, i) for s in range(3) for i in range(50)}
    assert len(seeds) == 150


def test_cluster_crops_are_square_and_labelled():
    synthetic = generate_image(2, SMALL)
    crops = cluster_crops(synthetic, size=64)
    assert [label for _, label in crops] == [box.label for box in synthetic.boxes]
    assert all(crop.shape == (64, 64, 3) and crop.dtype == np.uint8 for crop, _ in crops)


@pytest.mark.parametrize(
    "changes",
    [
        {"width": 10},
        {"grade_mix": (1.0, 0.0)},
        {"grade_mix": (0.0,) * 6},
        {"clusters_per_image": (3, 1)},
        {"cells_per_cluster": (0, 4)},
        {"cell_scale": 0.0},
        {"cluster_coherence": 1.5},
    ],
)
def test_config_refuses_bad_values(changes):
    with pytest.raises(ValueError):
        SyntheticConfig(**changes)


def test_negative_seed_is_refused():
    with pytest.raises(ValueError):
        generate_image(-1, SMALL)
