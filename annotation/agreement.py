"""Agreement among experts who label the same items, and a Dawid-Skene consensus.

Pure module (no Django import): the consensus engine passes plain arrays in and stores what
comes back. Labels are Bethesda indices 0..5 (``annotation.bethesda``), which are ordinal.

Two layouts are used, each the one its field's reference uses:

* ``labels``: items x raters, integer, ``-1`` = the rater did not label the item (``MISSING``).
  Used by ``dawid_skene``, ``pairwise_cohen``, ``agreement_with_consensus``.
* reliability data: raters x items, float, ``np.nan`` = missing (Krippendorff's layout).
  ``reliability_data(labels)`` converts; ``category_counts(labels)`` gives Fleiss' table.

Every statistic equals an established implementation on the same data (to 1e-9, tested in
``tests/annotation/test_agreement.py``); where the references have a degenerate case we return
what they return, so a number from here means the same as the number in the literature.

fleiss_kappa (statsmodels ``fleiss_kappa(method="fleiss")``)
    Needs the same number of raters (at least two) on every item; we raise ``ValueError`` where
    statsmodels fails an assertion. All ratings in one single category: chance agreement is 1
    and kappa is 0/0 -> ``nan`` (statsmodels gives nan too). Use Krippendorff's alpha when
    raters are missing.

krippendorff_alpha (``krippendorff.alpha``)
    Coincidence-matrix definition: units with fewer than two values are not pairable and do not
    count; ``n_c`` are the pairable values per category. Ordinal distance between categories c
    and k is ``(sum_{g=c..k} n_g - (n_c + n_k) / 2) ** 2``. A category of the domain that no
    pairable value uses has ``n_g = 0`` and so adds nothing to the distance: the ordinal (and
    interval, nominal) value is the same whether the domain is the categories present or the
    full ``range(n_categories)``. The domain matters in two places only, and ``n_categories``
    picks which behaviour you get:

    * ``n_categories=None`` (the reference with ``value_domain=None``): the domain is the
      distinct values present; fewer than two distinct values raise ``ValueError`` ("more than
      one value in the domain"), as the reference does.
    * ``n_categories=6`` (the reference with ``value_domain=range(6)``): values outside 0..5
      raise ``ValueError``; if all pairable values are one category, expected disagreement is 0
      and alpha is 0/0 -> ``nan`` (the reference returns nan with a RuntimeWarning; we return
      nan quietly).

    Both raise ``ValueError`` when no item has two or more values. Perfect agreement across
    two or more categories gives 1.0. A rater with no items (a row of nan) changes nothing.

weighted_cohen_kappa (sklearn ``cohen_kappa_score(weights=..., labels=range(K))``)
    Items where either rating is ``-1`` are left out (sklearn drops samples whose labels are not
    in ``labels``, which is what -1 is). When both raters used only one and the same category,
    or no item is shared, kappa is undefined and we return ``nan`` (sklearn's default
    ``replace_undefined_by=np.nan``).

dawid_skene (crowd-kit ``crowdkit.aggregation.DawidSkene``, Dawid & Skene 1979)
    See ``dawid_skene``'s docstring for the exact update order, the 1e-10 floor and the stopping
    rule, all chosen to equal crowd-kit 1.4; its ``probas_``, ``priors_``, ``errors_`` and
    ``loss_history_`` are reproduced to 1e-9 given the same start and iteration budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from annotation.bethesda import NUM_CLASSES

MISSING = -1
#: Probability floor crowd-kit applies (its ``_EPS = 10 ** -10``).
DS_EPS = 1e-10

Level = Literal["nominal", "ordinal", "interval"]
KappaWeights = Literal["quadratic", "linear"] | None
LEVELS: tuple[str, ...] = ("nominal", "ordinal", "interval")


# --- layouts ----------------------------------------------------------------------------------


def _as_label_matrix(labels: np.ndarray | Sequence, n_categories: int) -> np.ndarray:
    """items x raters int array; every entry ``-1`` or a category in 0..n_categories-1."""
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"labels must be 2-D (items x raters), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError("labels must be whole numbers (category indices, -1 = missing)")
    arr = arr.astype(np.int64)
    bad = (arr != MISSING) & ((arr < 0) | (arr >= n_categories))
    if bad.any():
        raise ValueError(
            f"labels must be -1 (missing) or 0..{n_categories - 1}; got {sorted(set(arr[bad]))}"
        )
    return arr


def reliability_data(labels: np.ndarray | Sequence) -> np.ndarray:
    """items x raters labels (-1 missing) -> raters x items floats (nan missing)."""
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"labels must be 2-D (items x raters), got shape {arr.shape}")
    out = arr.T.astype(float)
    out[arr.T == MISSING] = np.nan
    return out


def category_counts(labels: np.ndarray | Sequence, n_categories: int = NUM_CLASSES) -> np.ndarray:
    """items x raters labels (-1 missing) -> items x categories counts (Fleiss' table)."""
    arr = _as_label_matrix(labels, n_categories)
    counts = np.zeros((arr.shape[0], n_categories), dtype=np.int64)
    for c in range(n_categories):
        counts[:, c] = (arr == c).sum(axis=1)
    return counts


# --- Fleiss -----------------------------------------------------------------------------------


def fleiss_kappa(counts: np.ndarray | Sequence) -> float:
    """Fleiss' kappa of an items x categories table of rater counts.

    Every item must have the same number n >= 2 of ratings. P_i = (sum_c n_ic^2 - n) /
    (n (n - 1)), P_bar their mean, p_c the category shares, P_e = sum_c p_c^2;
    kappa = (P_bar - P_e) / (1 - P_e); ``nan`` when P_e == 1 (one category only).
    """
    table = np.asarray(counts, dtype=float)
    if table.ndim != 2 or table.shape[0] == 0:
        raise ValueError(f"counts must be a non-empty items x categories table, got {table.shape}")
    if (table < 0).any():
        raise ValueError("counts must be non-negative")
    per_item = table.sum(axis=1)
    n = per_item.max()
    if not np.all(per_item == n):
        raise ValueError(
            "Fleiss' kappa needs the same number of raters on every item; "
            "use krippendorff_alpha for missing ratings"
        )
    if n < 2:
        raise ValueError("Fleiss' kappa needs at least two raters per item")
    p_cat = table.sum(axis=0) / table.sum()
    p_item = ((table * table).sum(axis=1) - n) / (n * (n - 1.0))
    p_bar = p_item.mean()
    p_exp = (p_cat * p_cat).sum()
    if p_exp == 1.0:
        return float("nan")
    return float((p_bar - p_exp) / (1.0 - p_exp))


# --- Krippendorff -----------------------------------------------------------------------------


def krippendorff_alpha(
    data: np.ndarray | Sequence,
    level: Level = "ordinal",
    n_categories: int | None = None,
) -> float:
    """Krippendorff's alpha of raters x items data (``np.nan`` = missing).

    ``level``: "nominal", "ordinal" (default: Bethesda grades are ordered) or "interval".
    ``n_categories``: None -> the domain is the values present (reference's default);
    an int -> the domain is ``range(n_categories)`` (reference's ``value_domain=range(n)``).
    See the module docstring for the degenerate cases.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    values = np.asarray(data, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"data must be 2-D (raters x items), got shape {values.shape}")
    present = values[~np.isnan(values)]
    if n_categories is None:
        domain = np.unique(present)
    else:
        domain = np.arange(n_categories, dtype=float)
        if not np.isin(present, domain).all():
            raise ValueError(f"data contains values outside 0..{n_categories - 1}")
    if len(domain) <= 1:
        raise ValueError("There has to be more than one value in the domain.")

    # units x values: how many raters gave each value to each unit
    unit_counts = (values.T[:, :, None] == domain[None, None, :]).sum(axis=1).astype(float)
    m_u = unit_counts.sum(axis=1)
    pairable = m_u >= 2
    if not pairable.any():
        raise ValueError(
            "There has to be at least one unit with values assigned by at least two coders."
        )
    nu = unit_counts[pairable]
    # coincidences o_ck = sum_u (n_uc n_uk - [c == k] n_uc) / (m_u - 1)
    outer = nu[:, :, None] * nu[:, None, :]
    idx = np.arange(len(domain))
    outer[:, idx, idx] -= nu
    o = (outer / (m_u[pairable] - 1.0)[:, None, None]).sum(axis=0)
    n_v = o.sum(axis=0)
    e = (np.outer(n_v, n_v) - np.diag(n_v)) / (n_v.sum() - 1.0)
    d = _distance_matrix(domain, n_v, level)
    observed = (o * d).sum()
    expected = (e * d).sum()
    if expected == 0.0:
        return float("nan")
    return float(1.0 - observed / expected)


def _distance_matrix(domain: np.ndarray, n_v: np.ndarray, level: str) -> np.ndarray:
    if level == "nominal":
        return 1.0 - np.eye(len(domain))
    if level == "interval":
        return (domain[:, None] - domain[None, :]) ** 2
    # ordinal: (n_c + ... + n_k) - (n_c + n_k) / 2, squared, for c <= k
    cumulative = np.concatenate(([0.0], np.cumsum(n_v)))
    lo = np.minimum.outer(np.arange(len(domain)), np.arange(len(domain)))
    hi = np.maximum.outer(np.arange(len(domain)), np.arange(len(domain)))
    between = cumulative[hi + 1] - cumulative[lo]
    return (between - (n_v[lo] + n_v[hi]) / 2.0) ** 2


# --- Cohen ------------------------------------------------------------------------------------


def weighted_cohen_kappa(
    a: np.ndarray | Sequence,
    b: np.ndarray | Sequence,
    weights: KappaWeights = "quadratic",
    n_categories: int = NUM_CLASSES,
) -> float:
    """Cohen's kappa of two raters over the same items, optionally weighted by grade distance.

    ``weights``: "quadratic" ((i - j)^2, default), "linear" (|i - j|) or None (unweighted).
    Pairs where either rating is -1 are left out; ``nan`` when undefined (see module docstring).
    """
    if weights not in ("quadratic", "linear", None):
        raise ValueError(f"weights must be 'quadratic', 'linear' or None, got {weights!r}")
    x = np.asarray(a)
    y = np.asarray(b)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"a and b must be 1-D and the same length, got {x.shape} and {y.shape}")
    pair = _as_label_matrix(np.stack([x, y], axis=1), n_categories)
    pair = pair[(pair != MISSING).all(axis=1)]
    if len(pair) == 0:
        return float("nan")
    observed = np.zeros((n_categories, n_categories))
    np.add.at(observed, (pair[:, 0], pair[:, 1]), 1.0)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    grades = np.arange(n_categories, dtype=float)
    if weights is None:
        w = 1.0 - np.eye(n_categories)
    elif weights == "linear":
        w = np.abs(grades[:, None] - grades[None, :])
    else:
        w = (grades[:, None] - grades[None, :]) ** 2
    denominator = (w * expected).sum()
    if denominator == 0.0:
        return float("nan")
    return float(1.0 - (w * observed).sum() / denominator)


# --- Dawid-Skene ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DawidSkeneResult:
    """What ``dawid_skene`` estimates. K = n_categories, R = raters, I = items.

    posteriors: I x K, P(true class of item i = k | all labels). Items nobody labelled get the
        priors. Classes no rater ever used have posterior 0.
    priors: K, the class prevalences (mean posterior over the labelled items); 0 for classes
        no rater used.
    confusion: R x K x K, ``confusion[r, t, o]`` = P(rater r says o | true class t); rows are
        true classes and sum to 1. A label the rater never gave has probability 0. Rows of
        classes no rater used, and every row of a rater with no items, are ``nan`` (no estimate).
    reliability: R, ``sum_t priors[t] * confusion[r, t, t]``: the prior-weighted mean of the
        diagonal, i.e. the probability under the fitted model that the rater gives the true
        class of a randomly drawn item (expected accuracy). ``nan`` for a rater with no items.
    n_iter: EM iterations run (each one E-step then M-step); 0 = the initial M-step only.
    loss_history: crowd-kit's per-iteration loss (see ``dawid_skene``), one per iteration.
    """

    posteriors: np.ndarray
    priors: np.ndarray
    confusion: np.ndarray
    reliability: np.ndarray
    n_iter: int
    loss_history: tuple[float, ...]


def dawid_skene(
    labels: np.ndarray | Sequence,
    n_categories: int = NUM_CLASSES,
    n_iter: int = 100,
    tol: float = 1e-5,
    init: Literal["majority"] | np.ndarray = "majority",
    eps: float = DS_EPS,
) -> DawidSkeneResult:
    """Dawid & Skene (1979) EM over items x raters labels (-1 = missing).

    The defaults reproduce crowd-kit 1.4's ``DawidSkene(n_iter=100, tol=1e-5)`` step by step:

    1. Start: posteriors T = ``init``; "majority" is the share of each item's votes per class
       (crowd-kit's ``MajorityVote().fit_predict_proba``); an I x K array is used as given.
       priors = mean of T over labelled items; then an M-step.
    2. M-step: for rater r, ``n[t, o] = sum of T[i, t]`` over the items r labelled ``o``;
       entries for labels r gave at least once are floored at ``eps``; labels r never gave stay
       0; each true-class row t is divided by its sum.
    3. Each iteration: E-step ``T[i] ~ max(priors, eps) * prod_r confusion[r, :, label_ir]``
       (in logs, shifted by the row maximum), priors = mean of T, M-step, then the loss below;
       stop after ``n_iter`` iterations or as soon as ``loss - previous_loss < tol`` (the first
       iteration's previous loss is -inf, so at least one runs when ``n_iter >= 1``).
    4. Loss (crowd-kit's ``_evidence_lower_bound`` divided by the number of labels): over every
       label (i, r, o), ``sum_t T[i,t] (log confusion[r,t,o] + log max(priors[t], eps))``, plus
       the entropy ``-sum T' log T'`` with ``T' = max(T, eps)``. Note the prior term is counted
       once per label, not once per item as in the textbook ELBO; it is kept that way because
       it is the stopping rule crowd-kit uses.

    The model covers only the classes that appear in ``labels`` (crowd-kit's classes are the
    labels present in its data); see ``DawidSkeneResult`` for how the other classes are shown.
    Items nobody labelled are left out of the fit (crowd-kit never sees them).

    One difference from crowd-kit, below the 1e-9 we test to: crowd-kit's returned ``probas_``
    are floored at 1e-10 in place by its loss computation (so a row may sum to slightly more
    than 1); we return the unfloored, normalised posteriors.
    """
    arr = _as_label_matrix(labels, n_categories)
    n_items, n_raters = arr.shape
    observed = arr != MISSING
    if not observed.any():
        raise ValueError("dawid_skene needs at least one label")
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")

    active = np.flatnonzero(np.bincount(arr[observed], minlength=n_categories) > 0)
    k = len(active)
    code = np.full(n_categories, MISSING, dtype=np.int64)
    code[active] = np.arange(k)
    lab = np.where(observed, code[np.where(observed, arr, 0)], MISSING)  # active-class codes
    labelled = observed.any(axis=1)
    lab = lab[labelled]
    # one-hot per rater: onehot[r] is (labelled items x k), 0 where r gave no label
    onehot = np.stack([(lab[:, r, None] == np.arange(k)[None, :]) for r in range(n_raters)])
    onehot = onehot.astype(float)
    used = onehot.sum(axis=1) > 0  # R x k: labels each rater gave at least once

    if isinstance(init, str):
        if init != "majority":
            raise ValueError(f"init must be 'majority' or an items x {n_categories} array")
        votes = onehot.sum(axis=0)
        post = votes / votes.sum(axis=1, keepdims=True)
    else:
        start = np.asarray(init, dtype=float)
        if start.shape != (n_items, n_categories):
            raise ValueError(f"init must have shape {(n_items, n_categories)}, got {start.shape}")
        post = start[labelled][:, active]

    def m_step(t: np.ndarray) -> np.ndarray:
        sums = np.einsum("it,rio->rto", t, onehot)
        sums = np.where(used[:, None, :], np.maximum(sums, eps), 0.0)
        with np.errstate(invalid="ignore"):  # a rater with no items: 0/0 -> nan (no estimate)
            return sums / sums.sum(axis=2, keepdims=True)

    def log_evidence(conf: np.ndarray) -> np.ndarray:
        # labelled items x k: sum over raters of log P(label | true class)
        with np.errstate(divide="ignore"):
            log_conf = np.log(conf)
        total = np.zeros((len(lab), k))
        for r in range(n_raters):
            rows = lab[:, r] != MISSING
            total[rows] += log_conf[r][:, lab[rows, r]].T
        return total

    def e_step(prior: np.ndarray, conf: np.ndarray) -> np.ndarray:
        loglik = np.log(np.maximum(prior, eps))[None, :] + log_evidence(conf)
        lik = np.exp(loglik - loglik.max(axis=1, keepdims=True))
        return lik / lik.sum(axis=1, keepdims=True)

    n_labels = int(observed.sum())
    n_per_item = (lab != MISSING).sum(axis=1)

    def loss(t: np.ndarray, prior: np.ndarray, conf: np.ndarray) -> float:
        joint = (t * log_evidence(conf)).sum()
        joint += (t * n_per_item[:, None] * np.log(np.maximum(prior, eps))[None, :]).sum()
        floored = np.maximum(t, eps)
        entropy = -(floored * np.log(floored)).sum()
        return float((joint + entropy) / n_labels)

    priors = post.mean(axis=0)
    conf = m_step(post)
    history: list[float] = []
    previous = -np.inf
    for _ in range(n_iter):
        post = e_step(priors, conf)
        priors = post.mean(axis=0)
        conf = m_step(post)
        current = loss(post, priors, conf)
        history.append(current)
        if current - previous < tol:
            break
        previous = current

    full_priors = np.zeros(n_categories)
    full_priors[active] = priors
    posteriors = np.tile(full_priors, (n_items, 1))
    posteriors[np.flatnonzero(labelled)[:, None], active[None, :]] = post
    confusion = np.full((n_raters, n_categories, n_categories), np.nan)
    has_items = observed.any(axis=0)
    block = np.zeros((n_raters, k, n_categories))
    block[:, :, active] = conf
    confusion[:, active, :] = block
    confusion[~has_items] = np.nan
    diagonal = conf[:, np.arange(k), np.arange(k)]
    reliability = np.where(has_items, diagonal @ priors, np.nan)
    return DawidSkeneResult(
        posteriors=posteriors,
        priors=full_priors,
        confusion=confusion,
        reliability=reliability,
        n_iter=len(history),
        loss_history=tuple(history),
    )


# --- summaries --------------------------------------------------------------------------------


def pairwise_cohen(
    matrix: np.ndarray | Sequence,
    weights: KappaWeights = "quadratic",
    n_categories: int = NUM_CLASSES,
) -> dict[tuple[int, int], float]:
    """Weighted kappa of every rater pair (i < j) over the items both labelled.

    ``matrix`` is items x raters, -1 = missing. A pair with no shared item, or whose kappa is
    undefined, maps to ``nan``.
    """
    arr = _as_label_matrix(matrix, n_categories)
    n_raters = arr.shape[1]
    return {
        (i, j): weighted_cohen_kappa(arr[:, i], arr[:, j], weights, n_categories)
        for i in range(n_raters)
        for j in range(i + 1, n_raters)
    }


def agreement_with_consensus(
    labels: np.ndarray | Sequence,
    consensus: np.ndarray | Sequence,
    n_categories: int = NUM_CLASSES,
) -> np.ndarray:
    """Per rater: the share of their labelled items where they gave the consensus label.

    ``labels`` is items x raters (-1 missing), ``consensus`` one label per item (-1 = none;
    such items are skipped). ``nan`` for a rater with no item that has a consensus.
    """
    arr = _as_label_matrix(labels, n_categories)
    truth = _consensus_vector(consensus, arr.shape[0], n_categories)
    scored = (arr != MISSING) & (truth != MISSING)[:, None]
    hits = ((arr == truth[:, None]) & scored).sum(axis=0)
    totals = scored.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, hits / np.maximum(totals, 1), np.nan)


def confusion_against(
    labels_of_rater: np.ndarray | Sequence,
    consensus: np.ndarray | Sequence,
    n_categories: int = NUM_CLASSES,
) -> np.ndarray:
    """K x K counts: row = consensus (true) class, column = the rater's label.

    Items where either is -1 are skipped, so a rater with no items gives all zeros.
    """
    rater = np.asarray(labels_of_rater)
    if rater.ndim != 1:
        raise ValueError(f"labels_of_rater must be 1-D, got shape {rater.shape}")
    rater = _as_label_matrix(rater[:, None], n_categories)[:, 0]
    truth = _consensus_vector(consensus, len(rater), n_categories)
    both = (rater != MISSING) & (truth != MISSING)
    counts = np.zeros((n_categories, n_categories), dtype=np.int64)
    np.add.at(counts, (truth[both], rater[both]), 1)
    return counts


def _consensus_vector(
    consensus: np.ndarray | Sequence, n_items: int, n_categories: int
) -> np.ndarray:
    truth = np.asarray(consensus)
    if truth.shape != (n_items,):
        raise ValueError(f"consensus must have one label per item ({n_items}), got {truth.shape}")
    return _as_label_matrix(truth[:, None], n_categories)[:, 0]
