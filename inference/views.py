"""Active learning pages (admin): the promoted models, prediction jobs, ranking rounds.

Views check the role, read through ``inference.selectors``, write through one
``inference.services`` call and render one template (its named partial for htmx requests).
The job list polls its partial every 2 s while a job is queued or running.
"""

from __future__ import annotations

import math

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from annotation import access, labelstudio
from annotation import services as annotation_services
from annotation.bethesda import BETHESDA, DESCRIPTIONS
from cytoloop import charts
from cytoloop.roles import Role, role_required
from inference import selectors, services
from inference.forms import PredictForm, RankingRoundForm
from inference.models import PredictionJob, RankingRound
from inference.services import InferenceRefused
from inference.strategies import NOT_FOR_ROUNDS, ROUND_STRATEGIES, STRATEGIES
from training.models import ModelKind
from training.promotion import figures_of
from training.selectors import promoted_versions

#: Ranked images per page of a round (the selected ones come first).
PAGE_SIZE = 24


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# ---------------------------------------------------------------------------------------------
# The promoted models


def _threshold(detector) -> dict:
    """The operating threshold inference uses for this detector, and where it came from."""
    chosen = (detector.metrics or {}).get("threshold")
    chosen = chosen if isinstance(chosen, dict) else {}
    value = services.operating_threshold(detector)
    if chosen.get("threshold") is None:
        return {"value": value, "source": "default",
                "note": "the version stores no threshold; inference uses the default"}
    if chosen.get("source") == "validation":
        # the validation images' recall and precision are not shown: the threshold was fit to them
        # (recall is the target by construction, and precision 1.00 whenever every validation image
        # is atypical), so they said "recall 1.00, precision 1.00" of any detector, however poor
        parts = [f"chosen on validation for image recall ≥ {chosen['target_recall']:.2f}"
                 if _number(chosen.get("target_recall")) is not None else "chosen on validation"]
        if chosen.get("achieved") is False:
            parts.append("target recall not reached")
        return {"value": value, "source": "validation", "note": ", ".join(parts)}
    return {"value": value, "source": str(chosen.get("source") or "stored"), "note": chosen.get("reason") or ""}


def _models_context() -> dict:
    promoted = promoted_versions()
    detector, classifier = promoted.get(ModelKind.DETECTOR), promoted.get(ModelKind.CLASSIFIER)
    missing = [kind for kind, v in ((ModelKind.DETECTOR, detector), (ModelKind.CLASSIFIER, classifier)) if v is None]
    return {
        "detector": detector,
        "classifier": classifier,
        "threshold": _threshold(detector) if detector else None,
        "detector_test": figures_of(detector) if detector else None,
        "classifier_test": figures_of(classifier) if classifier else None,
        "missing": [str(kind) for kind in missing],
        "has_pair": not missing,
    }


# ---------------------------------------------------------------------------------------------
# Prediction jobs


def _job_row(job: PredictionJob) -> dict:
    p = job.progress or {}

    def count(key):
        value = p.get(key)
        return value if isinstance(value, int) else None

    return {
        "job": job,
        "done": count("done"), "total": count("total"), "predicted": count("predicted"),
        "skipped": count("skipped"), "pushed": count("pushed"), "push_failed": count("push_failed"),
        "models": f"{job.detector_version.name} + {job.classifier_version.name}",
        "scope": "whole dataset" if job.image_ids is None else _plural(len(job.image_ids), "image"),
        "active": job.status in selectors.ACTIVE_JOBS,
    }


def _jobs_context() -> dict:
    return {"job_rows": [_job_row(j) for j in selectors.recent_jobs()], "polling": selectors.any_job_active()}


# ---------------------------------------------------------------------------------------------
# The page


def _round_row(round_: RankingRound) -> dict:
    return {"round": round_, "url": reverse("inference:round", args=[round_.pk]),
            "models": f"{round_.detector_version.name} + {round_.classifier_version.name}"}


def _index_context(*, predict_form: PredictForm | None = None, round_form: RankingRoundForm | None = None) -> dict:
    models = _models_context()
    predict_form = predict_form or PredictForm(prefix="predict", datasets=selectors.datasets_for_prediction())
    round_form = round_form or RankingRoundForm(
        datasets=selectors.datasets_for_ranking(models["detector"], models["classifier"]))
    return {
        **models,
        **_jobs_context(),
        "predict_form": predict_form,
        "round_form": round_form,
        "has_datasets": predict_form.fields["dataset"].queryset.exists(),
        "label_studio": labelstudio.is_configured(),
        "strategies": [STRATEGIES[name] for name in ROUND_STRATEGIES],
        "other_strategies": NOT_FOR_ROUNDS,
        "round_rows": [_round_row(r) for r in selectors.recent_rounds()],
    }


@role_required(Role.ADMIN)
@require_GET
@vary_on_headers("HX-Request")
def index(request):
    if request.htmx:
        return render(request, "inference/index.html#jobs", _jobs_context())
    return render(request, "inference/index.html", _index_context())


@role_required(Role.ADMIN)
@require_POST
def predict(request):
    form = PredictForm(request.POST, prefix="predict", datasets=selectors.datasets_for_prediction())
    if form.is_valid():
        dataset = form.cleaned_data["dataset"]
        try:
            job = services.start_prediction_job(
                dataset=dataset, created_by=request.user,
                push_to_label_studio=form.cleaned_data["push_to_label_studio"])
        except InferenceRefused as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request,
                f"Prediction job #{job.pk} queued on the gpu queue: {dataset.name} with "
                f"{job.detector_version.name} + {job.classifier_version.name}. The list below follows it.")
            return redirect(reverse("inference:index") + "#jobs")
    return render(request, "inference/index.html", _index_context(predict_form=form), status=400)


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def rounds(request):
    if request.method == "GET":  # the list lives on the main page
        return redirect(reverse("inference:index") + "#rounds")
    models = _models_context()
    form = RankingRoundForm(request.POST,
                            datasets=selectors.datasets_for_ranking(models["detector"], models["classifier"]))
    if form.is_valid():
        c = form.cleaned_data
        try:
            round_ = services.start_ranking_round(
                dataset=c["dataset"], strategy=c["strategy"], k=c["k"], diverse=c["diverse"],
                allow_preannotations=c["allow_preannotations"], created_by=request.user)
        except InferenceRefused as exc:
            form.add_error(None, str(exc))
        else:
            ranked = round_.ranked.count()
            unranked = round_.pool_size - ranked
            messages.success(
                request,
                f"Round #{round_.pk} ranked {_plural(ranked, 'unreviewed image')} of {round_.dataset.name} by "
                f"{round_.strategy}" + (f" ({unranked} with no cluster found left out)" if unranked else "")
                + f"; the {min(round_.k, ranked)} selected lead the experts' queues.")
            return redirect("inference:round", pk=round_.pk)
    return render(request, "inference/index.html", _index_context(round_form=form), status=400)


# ---------------------------------------------------------------------------------------------
# One round


def score_histogram(scores: list[tuple[float, bool]], k: int, descending: bool = True, bins: int | None = None
                    ) -> dict | None:
    """An SVG histogram of every ranked image's score, the selected ones stacked at the foot of
    each bar, with the top-k cut (halfway between the k-th and the next score in the strategy's
    direction; none when k covers the whole pool)."""
    values = [(float(s), bool(sel)) for s, sel in scores if _number(s) is not None]
    if not values:
        return None
    n = len(values)
    bins = bins or max(4, min(30, 2 * math.ceil(math.sqrt(n))))
    lo, hi = min(v for v, _ in values), max(v for v, _ in values)
    if hi - lo < 1e-12:
        pad = max(abs(lo) * 0.05, 0.05)
        lo, hi = lo - pad, hi + pad
    step = (hi - lo) / bins
    counts = [[0, 0] for _ in range(bins)]  # selected, the others
    for value, selected in values:
        counts[min(int((value - lo) / step), bins - 1)][0 if selected else 1] += 1
    ordered = sorted((v for v, _ in values), reverse=descending)
    cut = (ordered[k - 1] + ordered[k]) / 2 if 0 < k < n else None

    frame = charts.Frame(width=640, height=200, left=40, right=16, top=22, bottom=40)
    width = frame.width
    ticks = charts.int_ticks(max(sum(c) for c in counts))
    y_max = ticks[-1]

    def x_of(value: float) -> float:
        return frame.x((value - lo) / (hi - lo))

    def y_of(count: float) -> float:
        return frame.y(count / y_max)

    bar_w = frame.inner_w / bins
    bars = []
    for i, (selected, others) in enumerate(counts):
        start = lo + i * step
        bars.append({
            "x": frame.left + i * bar_w + 1, "w": max(bar_w - 2, 1.0),
            "sel_y": y_of(selected), "sel_h": y_of(0) - y_of(selected),
            "other_y": y_of(selected + others), "other_h": y_of(selected) - y_of(selected + others),
            "count": selected + others, "selected": selected,
            "title": f"{start:.3g} to {start + step:.3g}: {_plural(selected + others, 'image')}"
                     + (f", {selected} selected" if selected else ""),
        })
    cut_x = x_of(cut) if cut is not None else None
    return {
        **frame.box(), "label_x": frame.left - 6, "xlabel_y": frame.top + frame.inner_h + 16,
        "xtitle_y": frame.height - 4,
        "yticks": [{**tick, "text": count}
                   for count, tick in zip(ticks, charts.y_ticks(frame, [c / y_max for c in ticks]), strict=True)],
        "xticks": [{"x": x_of(v), "text": f"{v:.3g}"} for v in (lo, (lo + hi) / 2, hi)],
        "bars": bars, "n": n, "k": k, "cut": cut, "cut_x": cut_x,
        "cut_label_x": (cut_x + 4) if cut_x is not None and cut_x < width - 120 else (cut_x or 0) - 4,
        "cut_anchor": "start" if cut_x is not None and cut_x < width - 120 else "end",
        "selected_side": "right" if descending else "left",
    }


def _probabilities(cluster) -> list[dict] | None:
    if cluster is None or not isinstance(cluster.probabilities, list) or len(cluster.probabilities) != len(BETHESDA):
        return None
    values = [_number(p) or 0.0 for p in cluster.probabilities]
    total = sum(values) or 1.0
    call = max(range(len(values)), key=lambda i: (values[i], -i))
    return [{"label": label, "p": values[i] / total, "percent": round(100 * values[i] / total, 1),
             "description": DESCRIPTIONS[label], "call": i == call} for i, label in enumerate(BETHESDA)]


#: what the round's page says instead of the model's call on an image the user may not see it for
HIDDEN_CALL = "the model's call is hidden from you: you have a vote pending on this image (blind)"


def _card(ranked, boxes, dataset, *, shown: bool = True) -> dict:
    """One ranked image; ``shown`` False (annotation.access: the user has a vote pending on it)
    leaves out the model's boxes, probabilities, verdict and the reason that names its call."""
    if not shown:
        ranked.verdict, ranked.reason, ranked.top_cluster, boxes = None, HIDDEN_CALL, None, []
    image, top = ranked.image, ranked.top_cluster
    top_box_id = top.box_id if top is not None else None
    return {
        "ranked": ranked,
        "image": image,
        "url": reverse("annotation:image", args=[dataset.name, image.pk]),
        "boxes": [{"box": b, "top": b.pk == top_box_id} for b in boxes if b.pk != top_box_id]
                 + ([{"box": top.box, "top": True}] if top is not None else []),  # the top cluster drawn last, on top
        "top": top,
        "probabilities": _probabilities(top),
    }


def _predictions_shown(views: dict, image_id: int, model: str) -> bool:
    view = views.get(image_id)
    return view is not None and view.predictions and view.prediction_model in ("", model)


@role_required(Role.ADMIN)
@require_GET
def round_detail(request, pk: int):
    round_ = get_object_or_404(selectors.ranking_round(pk))
    strategy = STRATEGIES.get(round_.strategy)
    descending = strategy.descending if strategy else True
    scores = selectors.round_scores(round_)
    page = Paginator(selectors.ranked_images(round_), PAGE_SIZE).get_page(request.GET.get("page"))
    ranked = list(page.object_list)
    for item in ranked:
        if not item.image.thumbnail:
            annotation_services.ensure_thumbnail(image=item.image)
    boxes = selectors.predicted_boxes(round_, [r.image_id for r in ranked])
    views = access.image_views(request.user, [r.image for r in ranked])
    model = f"{round_.detector_version.name}+{round_.classifier_version.name}"
    base = reverse("inference:round", args=[round_.pk])
    context = {
        "round": round_,
        "models": f"{round_.detector_version.name} + {round_.classifier_version.name}",
        "strategy": strategy,
        "direction": strategy.direction if strategy else "higher is more uncertain",
        "newer": None if round_.active else selectors.newer_round(round_),
        "ranked_count": len(scores),
        "selected_count": sum(1 for _, selected in scores if selected),
        "cluster_count": selectors.round_cluster_count(round_),
        "histogram": score_histogram(scores, round_.k, descending),
        "cards": [_card(r, boxes.get(r.image_id, []), round_.dataset, shown=_predictions_shown(views, r.image_id, model))
                  for r in ranked],
        "page": page,
        "pages": {
            "previous": f"{base}?page={page.previous_page_number()}" if page.has_previous() else None,
            "next": f"{base}?page={page.next_page_number()}" if page.has_next() else None,
        },
    }
    return render(request, "inference/round.html", context)
