"""Simulated active learning (inference/active_learning/): the loop and its refusals.

The loop's mechanics run with a fast NumPy nearest-centroid classifier that records what it was
trained on; one short run trains the real (tiny) ResNeSt.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference.active_learning import (
    ClusterSet,
    EnsembleClassifier,
    augment_tta,
    ensemble_trainer,
    members_tta,
    model_seed,
    plan_splits,
    simulate,
)
from inference.strategies import STRATEGIES, UnknownStrategy, get_strategy, simulation_strategy
from inference.uncertainty import Predictions, select, select_diverse
from tests.inference.active_learning.conftest import (
    Centroids,
    RecordingTrainer,
    labelled_at,
    make_clusters,
    run,
)

ROOT = Path(__file__).resolve().parents[3]

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


# --- what the package imports ------------------------------------------------------------


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
