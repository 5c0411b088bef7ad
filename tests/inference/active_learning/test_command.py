"""The al_simulate command: its refusals (one line, no traceback) and what it prints and writes;
it runs in a child process, or in this one with the nearest-centroid fake as the learner."""

from __future__ import annotations

import json

import pytest

from tests.inference.active_learning.conftest import Centroids


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def synthetic(media, synthetic_dataset):
    """A small synthetic dataset "al-synth" imported into the test database (MEDIA_ROOT: media)."""
    return synthetic_dataset("al-synth", 16, seed=5)


def command(*args, media_root=None, timeout=120):
    from tests.helpers import child_env, manage

    env = child_env()
    if media_root is not None:
        env |= {"MEDIA_ROOT": str(media_root), "TEST_MEDIA_ROOT": str(media_root)}
    return manage("al_simulate", *args, env=env, timeout=timeout)


def one_line_error(done, text):
    assert done.returncode != 0
    assert text in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.django_db(transaction=True)
def test_command_refuses_an_unknown_dataset_listing_the_known_ones():
    from annotation.services import ensure_dataset

    ensure_dataset(name="there")
    one_line_error(command("nope"), "no dataset named 'nope'; known: there")


@pytest.mark.django_db(transaction=True)
def test_command_refuses_an_unknown_strategy_listing_the_known_ones():
    from annotation.services import ensure_dataset

    ensure_dataset(name="there")
    done = command("there", "--strategies", "random,entropie")
    one_line_error(done, "unknown strategy 'entropie'; known: ")
    assert "margin" in done.stderr and "+diverse" in done.stderr


@pytest.mark.django_db(transaction=True)
def test_command_refuses_detector_strategies_saying_why():
    from annotation.services import ensure_dataset

    ensure_dataset(name="there")
    one_line_error(command("there", "--strategies", "random,detector_disagreement"),
                   "'detector_disagreement' needs detector scores")


@pytest.mark.django_db(transaction=True)
def test_command_refuses_committee_scores_without_an_ensemble():
    from annotation.services import ensure_dataset

    ensure_dataset(name="there")
    one_line_error(command("there", "--strategies", "random,tta_bald", "--tta", "ensemble"),
                   "--tta ensemble compares the members of an --ensemble of at least 2")
    one_line_error(command("there", "--ensemble", "0"), "--ensemble must be at least 1")


@pytest.mark.django_db(transaction=True)
def test_command_refuses_too_few_clusters_for_the_rounds(synthetic, media):
    done = command("al-synth", "--rounds", "10", "--batch", "10", media_root=media)
    one_line_error(done, "al-synth: seed 0: the pool has")
    assert "fewer than the 110 the run reveals" in done.stderr


SIMULATION = ("al-synth", "--strategies", "random,tta_bald", "--rounds", "1", "--batch", "3", "--initial", "4",
              "--seeds", "1", "--input-size", "32", "--steps", "2", "--batch-size", "8",
              "--ensemble", "2", "--tta", "ensemble")


@pytest.mark.django_db(transaction=True)
def test_command_prints_the_curves_and_writes_json_and_png_with_a_fast_learner(synthetic, media, tmp_path,
                                                                               monkeypatch):
    """The short version of the next test (slow: six Keras trainings in a fresh process): the
    command in this process, its crops learnt by the nearest-centroid fake instead of ResNeSt."""
    import io

    from django.core.management import call_command

    import inference.active_learning

    monkeypatch.setattr(inference.active_learning, "keras_trainer",
                        lambda config, workdir=None: lambda images, labels, seed: Centroids(images, labels))
    stdout = io.StringIO()
    call_command("al_simulate", *SIMULATION, "--out", str(tmp_path / "res"), stdout=stdout)
    _assert_curves_json_and_png(stdout.getvalue(), tmp_path / "res")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_command_prints_the_curves_and_writes_json_and_png(synthetic, media, tmp_path):
    done = command(*SIMULATION, "--out", str(tmp_path / "res"), media_root=media, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_curves_json_and_png(done.stdout, tmp_path / "res")


def _assert_curves_json_and_png(stdout, out):
    assert "| labels | random | tta_bald |" in stdout
    assert "\n| 4 | " in stdout and "\n| 7 | " in stdout
    assert "label efficiency: target = random's final test macro-F1" in stdout
    assert "seed 0 | tta_bald | round 1/1: 7 labels" in stdout
    assert "6 trainings of 2 steps" in stdout  # 1 seed x (1 + 2 strategies x 1 round) x 2 members
    saved = json.loads((out / "al_simulate.json").read_text())
    assert saved["dataset"] == "al-synth" and saved["seeds"] == [0]
    assert saved["options"]["ensemble"] == 2 and saved["options"]["tta"] == "ensemble"
    assert saved["summary"]["tta_bald"]["labels"] == [4, 7]
    assert [len(c["macro_f1"]) for c in saved["curves"]["random"]] == [2]
    assert "ratio" in saved["efficiency"]
    png = (out / "al_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
