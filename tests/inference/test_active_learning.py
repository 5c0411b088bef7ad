"""Simulated active learning (inference/active_learning/ and the al_simulate command).

The loop's mechanics run with a fast NumPy nearest-centroid classifier that records what it was
trained on; one short run trains the real (tiny) ResNeSt; the command runs in a child process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference.active_learning import (
    ClusterSet,
    Efficiency,
    EnsembleClassifier,
    augment_tta,
    ensemble_trainer,
    format_efficiency,
    format_table,
    label_efficiency,
    labels_to_reach,
    members_tta,
    model_seed,
    plan_splits,
    simulate,
    summarize,
)
from inference.strategies import STRATEGIES, UnknownStrategy, get_strategy, simulation_strategy
from inference.uncertainty import Predictions, select, select_diverse

ROOT = Path(__file__).resolve().parents[2]

# --- a fast fake classifier ----------------------------------------------------------------


def make_clusters(n_images=24, per_image=6, side=4, seed=0) -> ClusterSet:
    """Crops whose pixels are a class pattern plus noise: learnable, never two alike."""
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(40, 215, size=(6, side, side, 3))
    labels = rng.integers(0, 6, size=n_images * per_image)
    noise = rng.normal(0, 45, size=(labels.size, side, side, 3))
    images = np.clip(patterns[labels] + noise, 0, 255).astype(np.uint8)
    image_ids = np.repeat(np.arange(100, 100 + n_images), per_image)
    return ClusterSet(images, labels, image_ids)


class Centroids:
    """Nearest centroid on the flattened pixels; softmax of -distance / temperature (classes
    never seen get probability 0). Deterministic; the embedding is the pixels themselves."""

    def __init__(self, images, labels):
        x = self.features(images)
        self.classes = np.unique(labels)
        self.centres = np.stack([x[labels == k].mean(axis=0) for k in self.classes])

    @staticmethod
    def features(images):
        return images.reshape(len(images), -1).astype(np.float64) / 255.0

    def predict(self, images):
        x = self.features(images)
        d = np.sqrt(((x[:, None, :] - self.centres[None]) ** 2).sum(axis=2))
        logits = -d / 0.5
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        probs = np.zeros((len(x), 6))
        probs[:, self.classes] = p / p.sum(axis=1, keepdims=True)
        return probs, x.astype(np.float32)


class RecordingTrainer:
    """train(images, labels, seed) -> Centroids, remembering every call's crops and seed."""

    def __init__(self, clusters: ClusterSet):
        self.index_of = {img.tobytes(): i for i, img in enumerate(clusters.images)}
        self.calls: list[tuple[list[int], int]] = []

    def __call__(self, images, labels, seed):
        self.calls.append(([self.index_of[img.tobytes()] for img in images], seed))
        return Centroids(images, labels)


def run(clusters, strategies, seeds=(0, 1), rounds=3, batch=5, initial=4, **kw):
    trainer = RecordingTrainer(clusters)
    result = simulate(clusters, strategies, train=trainer, rounds=rounds, batch=batch, seeds=seeds,
                      initial=initial, **kw)
    return result, trainer


def labelled_at(curve, r):
    return np.sort(np.concatenate([curve.initial, *curve.picked[:r]]).astype(int))


# --- the loop ------------------------------------------------------------------------------


def test_labels_grow_by_the_batch_every_round():
    result, _ = run(make_clusters(), ["random", "entropy"], rounds=3, batch=5, initial=4)
    for curves in result.curves.values():
        for curve in curves:
            assert curve.labels == [4, 9, 14, 19]
            assert [len(p) for p in curve.picked] == [5, 5, 5]
            assert [sum(c) for c in curve.class_counts] == curve.labels
            assert len(curve.macro_f1) == 4 and all(0.0 <= f <= 1.0 for f in curve.macro_f1)


def test_no_cluster_is_revealed_twice():
    result, _ = run(make_clusters(), ["margin", "tta_variance+diverse"], rounds=4, batch=6)
    for curves in result.curves.values():
        for curve in curves:
            revealed = [*curve.initial, *[i for picks in curve.picked for i in picks]]
            assert len(revealed) == len(set(revealed)) == 4 + 4 * 6


def test_the_initial_set_is_shared_by_strategies_and_differs_between_seeds():
    result, _ = run(make_clusters(), ["random", "entropy", "clinical_cost"], seeds=(0, 1, 2))
    for s in range(3):
        firsts = {tuple(result.curves[name][s].initial) for name in result.strategies}
        assert len(firsts) == 1
        assert list(firsts.pop()) == result.splits[s]["initial"]
    assert len({tuple(result.curves["entropy"][s].initial) for s in range(3)}) == 3


def test_test_images_never_enter_the_pool_or_the_training():
    clusters = make_clusters()
    result, trainer = run(clusters, ["entropy", "random+diverse"], seeds=(0, 1))
    for s, seed in enumerate(result.seeds):
        split = plan_splits(clusters.image_ids, clusters.labels, seeds=[seed], test_fraction=0.25,
                            initial=4, rounds=3, batch=5)[0]
        assert split.initial.tolist() == result.splits[s]["initial"]
        test = np.setdiff1d(np.arange(len(clusters)), split.pool)
        test_images = set(clusters.image_ids[test].tolist())
        assert test.size == result.splits[s]["test_clusters"] and len(test_images) == 6
        assert test_images.isdisjoint(clusters.image_ids[split.pool].tolist())
        trained = {i for indices, model_s in trainer.calls if model_s // 1000 == seed for i in indices}
        assert trained and trained.isdisjoint(test.tolist())
        for name in result.strategies:
            curve = result.curves[name][s]
            revealed = labelled_at(curve, len(curve.picked))
            assert test_images.isdisjoint(clusters.image_ids[revealed].tolist())


def test_round_zero_is_trained_once_and_every_round_trains_on_the_labelled_set():
    result, trainer = run(make_clusters(), ["random", "entropy"], seeds=(0, 1), rounds=2)
    # one training seed per (seed, round), shared by the strategies: the same start at round r
    assert [seed for _, seed in trainer.calls] == [0, 1, 2, 1, 2, 1000, 1001, 1002, 1001, 1002]
    expected = []
    for s in (0, 1):
        expected.append(result.splits[s]["initial"])  # round 0, once for both strategies
        expected += [labelled_at(result.curves[name][s], r).tolist() for name in ("random", "entropy")
                     for r in (1, 2)]
    assert [sorted(indices) for indices, _ in trainer.calls] == expected


@pytest.mark.parametrize("name", ["random", "entropy", "margin", "tta_variance"])
def test_the_strategys_top_picks_are_the_ones_revealed(name):
    clusters = make_clusters()
    result, _ = run(clusters, [name], seeds=(0,), rounds=3, batch=5)
    curve = result.curves[name][0]
    strategy = STRATEGIES[name]
    pool = set(result.splits[0]["initial"]) | set(plan_splits(
        clusters.image_ids, clusters.labels, seeds=[0], test_fraction=0.25, initial=4, rounds=3,
        batch=5)[0].pool.tolist())
    tta = augment_tta()
    for r, picks in enumerate(curve.picked):
        labelled = labelled_at(curve, r)
        unlabelled = np.asarray(sorted(pool - set(labelled.tolist())))
        model = Centroids(clusters.images[labelled], clusters.labels[labelled])
        probs, _ = model.predict(clusters.images[unlabelled])
        if name == "random":  # a new draw every round: seeded by the seed and the round
            scores = np.random.default_rng(model_seed(0, r)).random(unlabelled.size)
        elif name == "tta_variance":
            views = np.stack([model.predict(v)[0] for v in tta(clusters.images[unlabelled])], axis=1)
            scores = views.var(axis=1).mean(axis=1)
        elif name == "margin":
            top2 = np.sort(probs, axis=1)[:, -2:]
            scores = top2[:, 1] - top2[:, 0]
        else:
            scores = -(probs * np.log(np.where(probs > 0, probs, 1))).sum(axis=1)
        oriented = scores if strategy.descending else -scores
        chosen = np.isin(unlabelled, picks)
        assert chosen.sum() == 5
        assert oriented[chosen].min() >= oriented[~chosen].max() - 1e-12  # no better one left behind
        assert picks == unlabelled[select(scores, 5, descending=strategy.descending)].tolist()


class Tempered(Centroids):
    """Centroids whose softmax temperature depends on the seed: members that disagree."""

    def __init__(self, images, labels, seed):
        super().__init__(images, labels)
        self.temperature = 0.2 + 0.15 * (seed % 7)

    def predict(self, images):
        x = self.features(images)
        d = np.sqrt(((x[:, None, :] - self.centres[None]) ** 2).sum(axis=2))
        logits = -d / self.temperature
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = np.zeros((len(x), 6))
        probs[:, self.classes] = p / p.sum(axis=1, keepdims=True)
        return probs, x.astype(np.float32) * self.temperature


def test_an_ensemble_averages_probabilities_and_puts_embeddings_side_by_side():
    clusters = make_clusters()
    members = [Tempered(clusters.images, clusters.labels, seed) for seed in (0, 1, 2)]
    ensemble = EnsembleClassifier(members)
    images = clusters.images[:10]
    probs, emb = ensemble.predict(images)
    outs = [m.predict(images) for m in members]
    np.testing.assert_allclose(probs, np.mean([p for p, _ in outs], axis=0))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_array_equal(emb, np.concatenate([e for _, e in outs], axis=1))
    votes = ensemble.member_probabilities(images)
    assert votes.shape == (10, 3, 6)
    np.testing.assert_allclose(votes[:, 1], outs[1][0])
    with pytest.raises(ValueError, match="at least 2 members"):
        EnsembleClassifier(members[:1])


def test_an_ensemble_asks_its_members_once_for_the_same_array():
    clusters = make_clusters()
    counts = []

    class Counting(Tempered):
        def predict(self, images):
            counts.append(len(images))
            return super().predict(images)

    ensemble = EnsembleClassifier([Counting(clusters.images, clusters.labels, s) for s in (0, 1)])
    pool = clusters.images[:8]
    ensemble.predict(pool)
    ensemble.member_probabilities(pool)
    assert counts == [8, 8]
    ensemble.predict(pool.copy())  # another array (even with equal pixels): asked again
    assert counts == [8, 8, 8, 8]


def test_ensemble_trainer_trains_each_member_with_its_own_seed():
    calls = []

    def train(images, labels, seed):
        calls.append(seed)
        return Tempered(images, labels, seed)

    clusters = make_clusters()
    model = ensemble_trainer(train, 3)(clusters.images, clusters.labels, 7)
    assert calls == [21, 22, 23] and len(model.members) == 3
    assert ensemble_trainer(train, 1) is train
    with pytest.raises(ValueError, match="at least 1 member"):
        ensemble_trainer(train, 0)


def test_committee_scores_pick_by_the_members_disagreement():
    clusters = make_clusters()

    def train(images, labels, seed):
        return Tempered(images, labels, seed)

    result = simulate(clusters, ["tta_bald"], train=ensemble_trainer(train, 3), rounds=2, batch=5,
                      seeds=(0,), initial=4, tta=members_tta)
    curve = result.curves["tta_bald"][0]
    split = plan_splits(clusters.image_ids, clusters.labels, seeds=[0], test_fraction=0.25, initial=4,
                        rounds=2, batch=5)[0]
    for r, picks in enumerate(curve.picked):
        labelled = labelled_at(curve, r)
        unlabelled = np.setdiff1d(split.pool, labelled)
        seeds = [model_seed(0, r) * 3 + j for j in range(3)]
        votes = np.stack([Tempered(clusters.images[labelled], clusters.labels[labelled], s)
                          .predict(clusters.images[unlabelled])[0] for s in seeds], axis=1)
        scores = STRATEGIES["tta_bald"].score(Predictions(votes.mean(axis=1), tta_probabilities=votes))
        assert scores.max() > 0  # the members do disagree
        assert picks == unlabelled[select(scores, 5)].tolist()


def test_committee_scores_need_an_ensemble():
    with pytest.raises(ValueError, match="need an ensemble of at least 2 members"):
        run(make_clusters(), ["tta_variance"], seeds=(0,), rounds=1, batch=5, tta=members_tta)


def test_diverse_picks_are_k_center_among_the_most_uncertain():
    clusters = make_clusters()
    result, _ = run(clusters, ["entropy+diverse", "entropy"], seeds=(0,), rounds=2, batch=5,
                    pool_factor=3)
    split = plan_splits(clusters.image_ids, clusters.labels, seeds=[0], test_fraction=0.25, initial=4,
                        rounds=2, batch=5)[0]
    curve = result.curves["entropy+diverse"][0]
    for r, picks in enumerate(curve.picked):
        labelled = labelled_at(curve, r)
        unlabelled = np.setdiff1d(split.pool, labelled)
        model = Centroids(clusters.images[labelled], clusters.labels[labelled])
        probs, emb = model.predict(clusters.images[unlabelled])
        _, lab_emb = model.predict(clusters.images[labelled])
        scores = get_strategy("entropy").score(Predictions(probs))
        expected = select_diverse(np.concatenate([scores, np.zeros(len(labelled))]),
                                  np.concatenate([emb, lab_emb]), 5, pool_factor=3,
                                  already_selected=np.arange(len(unlabelled), len(unlabelled) + len(labelled)))
        assert picks == unlabelled[expected].tolist()
    assert curve.picked != result.curves["entropy"][0].picked  # diversity changed the picks


def test_a_seed_gives_the_same_curves_alone_or_with_others():
    clusters = make_clusters()
    both, _ = run(clusters, ["random", "least_confidence"], seeds=(0, 1))
    alone, _ = run(clusters, ["random", "least_confidence"], seeds=(1,))
    for name in ("random", "least_confidence"):
        assert alone.curves[name][0] == both.curves[name][1]
    again, _ = run(clusters, ["random", "least_confidence"], seeds=(0, 1))
    assert again.curves == both.curves


# --- refusals ------------------------------------------------------------------------------


def test_unknown_strategies_are_refused_listing_the_known_ones():
    with pytest.raises(UnknownStrategy, match="unknown strategy 'entropie'; known: .*entropy"):
        simulation_strategy("entropie")
    assert simulation_strategy("margin+diverse") == (STRATEGIES["margin"], True)


def test_detector_strategies_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="needs detector scores.*trains only the classifier"):
        simulation_strategy("detector_disagreement")


def test_a_pool_too_small_for_the_rounds_is_refused_before_training():
    clusters = make_clusters(n_images=8, per_image=3)
    trainer = RecordingTrainer(clusters)
    with pytest.raises(ValueError, match=r"fewer than the 40 the run reveals \(initial 10 \+ 3 rounds x 10\)"):
        simulate(clusters, ["random", "entropy"], train=trainer, rounds=3, batch=10, seeds=(0,))
    assert trainer.calls == []


def test_duplicated_strategies_are_refused():
    with pytest.raises(ValueError, match="named twice: entropy"):
        simulate(make_clusters(), ["entropy", "random", "entropy"], train=None, rounds=1, batch=2)


# --- summary and label efficiency ------------------------------------------------------------


def summary_of(curves: dict[str, list[float]], labels=(10, 20, 30, 40)):
    return {name: {"labels": list(labels), "mean": list(v), "sd": [0.0] * len(v)} for name, v in curves.items()}


def test_efficiency_interpolates_the_labels_needed():
    summary = summary_of({"random": [0.2, 0.3, 0.4, 0.5], "entropy": [0.2, 0.45, 0.55, 0.6],
                          "margin": [0.2, 0.3, 0.5, 0.5]})
    eff = label_efficiency(summary)
    assert eff.target == 0.5 and eff.baseline_labels == 40
    assert eff.needed == {"entropy": pytest.approx(25.0), "margin": pytest.approx(30.0)}
    assert eff.best == "entropy" and eff.ratio == pytest.approx(25 / 40) and not eff.goal_met
    line = format_efficiency(eff)
    assert "best entropy reaches it at 25 labels = 0.62 of random's" in line and "not met" in line


def test_efficiency_meets_the_goal_at_half_the_labels():
    eff = label_efficiency(summary_of({"random": [0.2, 0.3, 0.4, 0.5], "entropy": [0.3, 0.5, 0.6, 0.7]}))
    assert eff.needed["entropy"] == 20.0 and eff.ratio == 0.5 and eff.goal_met


def test_efficiency_says_not_reached():
    eff = label_efficiency(summary_of({"random": [0.2, 0.3, 0.4, 0.5], "entropy": [0.2, 0.3, 0.4, 0.49]}))
    assert eff == Efficiency(target=0.5, baseline_labels=40, start=0.2, needed={"entropy": None}, best=None,
                             ratio=None)
    assert "not reached by any other strategy" in format_efficiency(eff)
    assert label_efficiency(summary_of({"entropy": [0.1, 0.2, 0.3, 0.4]})) is None  # no random


def test_efficiency_is_undefined_when_random_does_not_rise():
    eff = label_efficiency(summary_of({"random": [0.3, 0.25, 0.3, 0.28], "entropy": [0.3, 0.2, 0.2, 0.2]}))
    assert not eff.defined and eff.best is None and eff.ratio is None and not eff.goal_met
    assert eff.needed == {"entropy": 10.0}  # "reached" at the start: the reason it is undefined
    line = format_efficiency(eff)
    assert "undefined: that is not above the 30.0 every strategy starts from" in line
    assert "not assessable" in line and "met" not in line
    assert label_efficiency(summary_of({"random": [0.3, 0.31], "margin": [0.3, 0.2]}, labels=(5, 10))).defined


def test_efficiency_seed_by_seed_pairs_each_seed_with_its_own_random_curve():
    from inference.active_learning import Curve, SimulationResult

    def curves(*values):
        return [Curve(seed=i, initial=[], labels=[10, 20, 30, 40], macro_f1=list(v)) for i, v in enumerate(values)]

    result = SimulationResult(
        strategies=["random", "entropy"], seeds=[0, 1, 2], rounds=3, batch=10, initial=10, test_fraction=0.25,
        curves={"random": curves([0.2, 0.3, 0.3, 0.4], [0.3, 0.5, 0.6, 0.7], [0.5, 0.4, 0.4, 0.45]),
                "entropy": curves([0.2, 0.6, 0.6, 0.6], [0.3, 0.5, 0.6, 0.6], [0.5, 0.7, 0.7, 0.7])},
        splits=[])
    eff = label_efficiency(summarize(result), result=result)
    assert eff.best == "entropy"
    # seed 0: 0.4 reached at 15 of 40 labels; seed 1: 0.7 never reached; seed 2: random does not rise
    assert eff.per_seed == [pytest.approx(0.375), None, None] and eff.seeds_meeting_goal == 1
    assert "seed by seed against that seed's random: 0.38, -, - (1 of 3 seeds <= 0.5)" in format_efficiency(eff)
    assert eff.to_json()["seeds_meeting_goal"] == 1
    assert label_efficiency(summarize(result)).per_seed is None  # means only without the result


def test_labels_to_reach_starts_at_the_first_point_and_needs_a_crossing():
    assert labels_to_reach([10, 20], [0.6, 0.7], 0.5) == 10.0
    assert labels_to_reach([10, 20, 30], [0.1, 0.3, 0.2], 0.2) == 15.0
    assert labels_to_reach([10, 20], [0.1, 0.3], 0.31) is None


def test_summary_and_table_show_mean_and_sample_sd_per_round():
    result, _ = run(make_clusters(), ["random", "entropy"], seeds=(0, 1, 2), rounds=2)
    summary = summarize(result)
    f1 = np.asarray([c.macro_f1 for c in result.curves["entropy"]])
    assert summary["entropy"]["labels"] == [4, 9, 14]
    assert np.allclose(summary["entropy"]["mean"], f1.mean(axis=0))
    assert np.allclose(summary["entropy"]["sd"], f1.std(axis=0, ddof=1))
    table = format_table(summary_of({"random": [0.2, 0.35], "entropy": [0.2, 0.4]}, labels=(10, 20)))
    assert table.splitlines() == ["| labels | random | entropy |", "|---|---|---|",
                                  "| 10 | 20.0 +- 0.0 | 20.0 +- 0.0 |", "| 20 | 35.0 +- 0.0 | 40.0 +- 0.0 |"]


def test_the_module_imports_neither_django_nor_tensorflow():
    code = ("import sys, inference.active_learning; "
            "sys.exit(any(m.split('.')[0] in ('django', 'tensorflow', 'keras', 'matplotlib') "
            "for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# --- the real classifier -------------------------------------------------------------------


def test_a_short_run_trains_the_tiny_resnest(tmp_path):
    from inference.active_learning import keras_trainer
    from training.augment import AugmentConfig
    from training.classifier.config import ClassifierRunConfig, DataConfig, OptimConfig

    rng = np.random.default_rng(3)
    clusters = ClusterSet(rng.integers(0, 255, size=(24, 32, 32, 3), dtype=np.uint8),
                          rng.integers(0, 6, size=24), np.repeat(np.arange(8), 3))
    config = ClassifierRunConfig(preset="resnest_tiny", dropout=0.0, data=DataConfig(input_size=32),
                                 augment=AugmentConfig(scale=False, random_erasing=False),
                                 optim=OptimConfig(epochs=1, batch_size=8, steps_per_epoch=2))
    lines = []
    result = simulate(clusters, ["tta_bald+diverse"], train=keras_trainer(config, tmp_path),
                      rounds=1, batch=4, initial=4, seeds=(0,), progress=lines.append)
    for name in result.strategies:
        curve = result.curves[name][0]
        assert curve.labels == [4, 8] and len(set(curve.picked[0]) - set(curve.initial)) == 4
        assert all(0.0 <= f <= 1.0 for f in curve.macro_f1)
    assert len(lines) == 2 and lines[0].startswith("seed 0 | every strategy | round 0/1: 4 labels")
    assert list(tmp_path.iterdir()) == []  # round checkpoints are cleaned up


# --- the command ---------------------------------------------------------------------------


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
