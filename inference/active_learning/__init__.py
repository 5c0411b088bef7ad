"""Simulated active learning on a labelled dataset: the ground truth plays the expert.

Pure package (no Django import; TensorFlow and matplotlib only inside the functions that need
them). The caller hands over one crop per cluster with its label and image (``ClusterSet``) and
a training function; ``simulate`` runs the loop for every seed and strategy and returns the
learning curves (test macro-F1 against the number of labels used). One module per step:
``pool`` (clusters, splits by image), ``learners`` (Keras, ensemble, test-time augmentation),
``loop`` (``simulate``), ``report`` (summary, label efficiency, printed tables), ``plots``
(the curve figure); which strategies it may run is the registry's (``inference.strategies``).
This module re-exports the public names.

Protocol, for each seed s
    1. Split by image (``plan_splits``): the images are cut into a test set (``test_fraction``
       of them) and the pool (the rest), stratified by each image's most severe grade
       (``training.splits.stratified_split`` with seed s). Every cluster of a pool image is one
       pool item; every cluster of a test image is in the test set. The test set has one use
       only, the point on the curve after each round: it is never trained on, never ranked and
       never picks weights or hyper-parameters. Each seed is its own split, so the spread over
       seeds includes which images are tested.
    2. Initial labelled set: ``initial`` pool clusters drawn uniformly with seed s, the same for
       every strategy of that seed.
    3. Rounds r = 0 .. R: train a fresh classifier on the labelled crops (``train(images,
       labels, seed)``; the model seed depends on s and r only, so at round r every strategy
       starts from the same initial weights), record (labels used, test macro-F1); then, except
       after the last round, predict the unlabelled pool (probabilities and embeddings; test-time
       augmentation too when the strategy needs it), score it with the strategy, pick ``batch``
       clusters (``select``; with a "+diverse" suffix ``select_diverse``, k-center greedy on
       the embeddings among the ``pool_factor * batch`` most uncertain, the labelled clusters
       counting as centres) and reveal their labels. A curve has R + 1 points, at
       ``initial + r * batch`` labels. Round 0 is the same model for every strategy of a seed,
       so it is trained once and shared.

No validation split (a decision): each round trains for a fixed number of optimizer steps and
keeps the final weights. A validation set carved from a few dozen labelled clusters would take a
large share of the labels the curve counts, and its macro-F1 over a handful of crops would pick
weights by noise; picking them on the test set would let the curve choose its own best point.
Every strategy gets the same steps in every round, so the curves compare labelled sets at equal
compute.

Summary: per strategy and round, the mean and sample sd (ddof=1) of test macro-F1 over seeds.
Label efficiency (``label_efficiency``): the target is random's final mean macro-F1; for every
other strategy, the labels its mean curve needs to reach it (the first point at or above it,
linearly interpolated from the point before; the first point itself when that already reaches
it; None, "not reached", otherwise); the best strategy is the one that needs fewest, and the
ratio is those labels over random's final label count. The issue's goal is a ratio <= 0.5.
The measure is undefined when random's final mean is not above the shared first point (a curve
that does not rise: every strategy would "reach" it with the initial labels alone). It reads
the mean curves: with a spread over seeds as large as the gaps between strategies, a ratio
below 0.5 can be noise; read it beside the table's sd and the paired per-seed ratios (the best
strategy against the same seed's random curve: same test set, same initial labels, same
round-0 model), which ``label_efficiency`` adds when given the result.
"""

from inference.active_learning.learners import (
    ALL_VARIANTS,
    ORIENTATION_VARIANTS,
    TTA,
    Classifier,
    EnsembleClassifier,
    KerasClassifier,
    Trainer,
    augment_tta,
    ensemble_trainer,
    keras_trainer,
    members_tta,
)
from inference.active_learning.loop import BASELINE, Curve, SimulationResult, model_seed, simulate
from inference.active_learning.plots import plot_curves
from inference.active_learning.pool import ClusterSet, Split, plan_splits, split_by_image
from inference.active_learning.report import (
    GOAL_RATIO,
    Efficiency,
    format_counts,
    format_efficiency,
    format_table,
    label_efficiency,
    labels_to_reach,
    mean_sd,
    summarize,
)

__all__ = [
    "ALL_VARIANTS", "BASELINE", "GOAL_RATIO", "ORIENTATION_VARIANTS", "TTA", "Classifier", "ClusterSet",
    "Curve", "Efficiency", "EnsembleClassifier", "KerasClassifier", "SimulationResult", "Split", "Trainer",
    "augment_tta", "ensemble_trainer", "format_counts", "format_efficiency", "format_table", "keras_trainer",
    "label_efficiency", "labels_to_reach", "mean_sd", "members_tta", "model_seed", "plan_splits",
    "plot_curves", "simulate", "split_by_image", "summarize",
]
