"""Training pages (admin): start and watch classifier runs, the model registry, promote/rollback.

Views check the role, read through ``training.selectors``, write through one
``training.services`` call and render one template (its named partial for htmx requests).
Live progress is a partial the page polls every 2 s while the run is queued or running.
"""

from __future__ import annotations

import math

from django.conf import settings
from django.contrib import messages
from django.core.files.storage import default_storage
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.timesince import timesince
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from cytoloop import charts
from cytoloop.roles import Role, role_required
from training import reports, selectors, services
from training.forms import PRESET_CHOICES, TARGET_CHOICES, ClassifierRunForm, DetectorRunForm
from training.models import ModelKind, ModelVersion, TrainingRun
from training.promotion import check_promotion
from training.services import PromotionNeedsConfirmation, TrainingRefused

#: A running run whose last heartbeat is older than this is flagged on its page (it beats every
#: TRAINING_HEARTBEAT_S; the beat task marks it interrupted after TRAINING_STALE_AFTER_S, a minute).
STALE_HEARTBEAT_S = 20
PRESET_NAMES = dict(PRESET_CHOICES)
TARGET_NAMES = dict(TARGET_CHOICES)


# ---------------------------------------------------------------------------------------------
# Small formatting helpers


def _duration(seconds) -> str:
    """12 s, 3 min 20 s, 2 h 05 min."""
    if seconds is None or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "—"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"




def metric_key(kind: str) -> str:
    """The validation metric a run of this kind is judged by (history and progress key)."""
    return "val_map" if kind == "detector" else "val_macro_f1"


def metric_name(kind: str) -> str:
    return "val mAP@0.5" if kind == "detector" else "val macro-F1"


def _best(run: TrainingRun) -> float | None:
    if run.best_metric is not None:
        return run.best_metric
    return reports.number((run.progress or {}).get("best_" + metric_key(run.kind)))


def _dataset_version_text(version) -> str:
    return f"{version.dataset.name} v{version.number}"


def _run_row(run: TrainingRun) -> dict:
    config = run.config or {}
    return {
        "run": run,
        "url": reverse("training:run", args=[run.pk]),
        "preset": config.get("preset", "—"),
        "dataset": _dataset_version_text(run.dataset_version),
        "epoch": (run.progress or {}).get("epoch"),
        "epochs": (run.progress or {}).get("epochs") or (config.get("optim") or {}).get("epochs"),
        "best": _best(run),
        "active": run.status in selectors.ACTIVE,
    }


def _safe_next(request, default: str) -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return default


# ---------------------------------------------------------------------------------------------
# The learning curve (SVG; the geometry from cytoloop.charts)


def learning_curve(history: list[dict], epochs: int | None = None, key: str = "val_macro_f1") -> dict | None:
    """Training loss (left axis) and the validation metric (right axis, 0-1) per epoch:
    macro-F1 for the classifier, mAP@0.5 for the detector (``key``)."""
    points = [h for h in history if isinstance(h.get("epoch"), int)]
    if not points:
        return None
    frame = charts.Frame(width=760, height=260, left=56, right=56, top=16, bottom=44)
    last = max(max(h["epoch"] for h in points), epochs or 0, 2)
    losses = [v for v in (reports.number(h.get("loss")) for h in points) if v is not None]
    loss_max = charts.nice_max(max(losses) * 1.05) if losses else 1.0

    def series(key: str, scale: float) -> tuple[str, list[dict]]:
        dots = [{"x": frame.x((h["epoch"] - 1) / (last - 1)), "y": frame.y(min(max(value / scale, 0.0), 1.0)),
                 "epoch": h["epoch"], "value": value}
                for h in points if (value := reports.number(h.get(key))) is not None]
        return charts.line_path((d["x"], d["y"]) for d in dots), dots

    loss_path, loss_dots = series("loss", loss_max)
    f1_path, f1_dots = series(key, 1.0)
    best = max(f1_dots, key=lambda d: (d["value"], -d["epoch"]), default=None)
    ticks = [{**t, "loss": _tick_text(t["share"] * loss_max), "f1": f"{t['share']:.2f}"}
             for t in charts.y_ticks(frame, (0.0, 0.25, 0.5, 0.75, 1.0))]
    every = max(1, math.ceil(last / 12))
    xticks = [{"x": frame.x((e - 1) / (last - 1)), "text": str(e)}
              for e in range(1, last + 1) if (e - 1) % every == 0 or e == last]
    return {
        **frame.box(), "loss_label_x": frame.left - 8, "f1_label_x": frame.width - frame.right + 8,
        "xlabel_y": frame.top + frame.inner_h + 18, "xtitle_y": frame.height - 4,
        "ticks": ticks, "xticks": xticks, "loss_path": loss_path, "f1_path": f1_path,
        "metric_label": "validation mAP@0.5" if key == "val_map" else "validation macro-F1",
        "loss_dots": loss_dots, "f1_dots": f1_dots, "best": best, "epochs": last,
    }


def _tick_text(value: float) -> str:
    return f"{value:.3g}"


# ---------------------------------------------------------------------------------------------
# Runs: the list and the start form


def _runs_context(form: ClassifierRunForm, det_form: DetectorRunForm) -> dict:
    runs = list(selectors.recent_runs())
    return {
        "form": form,
        "det_form": det_form,
        "rows": [_run_row(r) for r in runs],
        "polling": selectors.any_run_active(),
        "has_datasets": form.fields["dataset"].queryset.exists(),
    }


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
def runs(request):
    datasets = selectors.datasets_for_training()
    if request.method == "POST":
        detector = request.POST.get("kind") == ModelKind.DETECTOR
        form = ClassifierRunForm(request.POST if not detector else None, datasets=datasets)
        det_form = DetectorRunForm(request.POST if detector else None, datasets=datasets)
        posted = det_form if detector else form
        if posted.is_valid():
            try:
                run = services.start_training_run(
                    kind=ModelKind.DETECTOR if detector else ModelKind.CLASSIFIER, config=posted.config(),
                    dataset=posted.cleaned_data["dataset"], created_by=request.user,
                )
            except TrainingRefused as exc:
                posted.add_error(None, str(exc))
            else:
                messages.success(
                    request,
                    f"Run #{run.pk} queued on the gpu queue: {run.config['preset']} on "
                    f"{_dataset_version_text(run.dataset_version)}. This page follows it live.",
                )
                return redirect("training:run", pk=run.pk)
        return render(request, "training/runs.html", _runs_context(form, det_form), status=400)
    context = _runs_context(ClassifierRunForm(datasets=datasets), DetectorRunForm(datasets=datasets))
    if request.htmx:
        return render(request, "training/runs.html#runs", context)
    return render(request, "training/runs.html", context)


# ---------------------------------------------------------------------------------------------
# One run


def _config_summary(config: dict) -> list[tuple[str, str]]:
    if "num_classes" in config and "anchors" in config:  # a detector run
        return _detector_config_summary(config)
    data, optim = config.get("data") or {}, config.get("optim") or {}
    targets, augment = config.get("targets") or {}, config.get("augment") or {}
    kind = targets.get("kind", "—")
    target_text = TARGET_NAMES.get(kind, kind)
    if kind == "ordinal":
        target_text += f", n = {targets.get('n', 2):g}" + ("" if targets.get("normalize", True) else ", raw weights")

    def switch(value) -> str:
        return "on" if value else "off"

    limit = optim.get("time_limit_s")
    return [
        ("Preset", PRESET_NAMES.get(config.get("preset"), config.get("preset", "—"))),
        ("Epochs (maximum)", str(optim.get("epochs", "—"))),
        ("Batch size", str(optim.get("batch_size", "—"))),
        ("Input size", f"{data.get('input_size', '—')} px"),
        ("Learning rate", f"{optim['learning_rate']:g}" if "learning_rate" in optim else "—"),
        ("Targets", target_text),
        ("36x oversampling", switch(augment.get("oversample"))),
        ("Scale augmentation", switch(augment.get("scale"))),
        ("Random erasing", switch(augment.get("random_erasing"))),
        ("Early stopping patience", f"{optim.get('patience', '—')} epochs"),
        ("Time limit", _duration(limit) if limit else "none"),
        ("Seed", str(optim.get("seed", "—"))),
    ]


def _detector_config_summary(config: dict) -> list[tuple[str, str]]:
    optim, augment = config.get("optim") or {}, config.get("augment") or {}
    limit = optim.get("time_limit_s")

    def switch(value) -> str:
        return "on" if value else "off"

    return [
        ("Preset", str(config.get("preset", "—"))),
        ("Classes", f"{config.get('num_classes', '—')} (atypical grades; NILM is no detection)"),
        ("Input size", f"{config['input_size']} px" if config.get("input_size") else "the preset's"),
        ("Anchors", "IoU k-means on the training boxes" if config.get("anchors") == "kmeans" else "the preset's"),
        ("Epochs (maximum)", str(optim.get("epochs", "—"))),
        ("Batch size", str(optim.get("batch_size", "—"))),
        ("Learning rate", f"{optim['learning_rate']:g} peak, cosine after {optim.get('warmup_epochs', 0):g} "
                          "warm-up epoch(s)" if "learning_rate" in optim else "—"),
        ("36x oversampling", switch(augment.get("oversample"))),
        ("Mosaic", f"on (p = {augment.get('mosaic_prob', 0.5):g})" if augment.get("mosaic") else "off"),
        ("Threshold rule", f"image recall for >= ASC-US at {100 * config.get('target_recall', 1.0):g}% on validation"),
        ("Early stopping patience", f"{optim.get('patience', '—')} epochs"),
        ("Time limit", _duration(limit) if limit else "none"),
        ("Seed", str(optim.get("seed", "—"))),
    ]


def _run_context(run: TrainingRun) -> dict:
    progress = run.progress or {}
    now = timezone.now()
    heartbeat_s = (now - run.heartbeat_at).total_seconds() if run.heartbeat_at else None
    history = selectors.run_history(run)
    epochs = (run.config.get("optim") or {}).get("epochs")
    return {
        "run": run,
        "row": _run_row(run),
        "progress": {
            "step": progress.get("step"), "steps": progress.get("steps"),
            "epoch": progress.get("epoch"), "epochs": progress.get("epochs") or epochs,
            "loss": reports.number(progress.get("loss")),
            "val_macro_f1": reports.number(progress.get(metric_key(run.kind),
                                                 history[-1].get(metric_key(run.kind)) if history else None)),
            "best": _best(run), "eta": _duration(progress.get("eta_s")) if progress.get("eta_s") is not None else None,
            "stopped": progress.get("stopped"),
            "resumed": progress.get("resumed"),  # it fell back to an older checkpoint (training.loop)
        },
        "active": run.status in selectors.ACTIVE,
        "heartbeat_age": timesince(run.heartbeat_at, now, depth=1) if heartbeat_s and heartbeat_s >= 60
        else (f"{int(heartbeat_s)} s" if heartbeat_s is not None else None),
        "heartbeat_stale": run.status == TrainingRun.Status.RUNNING and heartbeat_s is not None
        and heartbeat_s > STALE_HEARTBEAT_S,
        "can_cancel": run.status in (*selectors.ACTIVE, TrainingRun.Status.INTERRUPTED) and not run.cancel_requested,
        "can_resume": run.status == TrainingRun.Status.INTERRUPTED,
        "curve": learning_curve(history, epochs, metric_key(run.kind)),
        "metric_name": metric_name(run.kind),
        "history": history,
        "model_version": getattr(run, "model_version", None),
        "config_summary": _config_summary(run.config or {}),
        "counts": _split_counts(run.dataset_version),
    }


def _split_counts(version) -> list[dict]:
    out = []
    for name in ("train", "val", "test"):
        entry = (version.counts or {}).get(name) or {}
        out.append({"split": name, "images": entry.get("images", len(version.splits.get(name, []))),
                    "clusters": sum((entry.get("clusters") or {}).values())})
    return out


@role_required(Role.ADMIN)
@require_GET
@vary_on_headers("HX-Request")
def run(request, pk: int):
    run = get_object_or_404(selectors.run(pk))
    context = _run_context(run)
    if request.htmx:
        return render(request, "training/run.html#live", context)
    return render(request, "training/run.html", context)


@role_required(Role.ADMIN)
@require_POST
def cancel(request, pk: int):
    run = get_object_or_404(selectors.run(pk))
    try:
        run = services.cancel_run(run=run)
    except TrainingRefused as exc:
        messages.error(request, str(exc))
    else:
        if run.status == TrainingRun.Status.CANCELLED:
            messages.success(request, f"Run #{run.pk} cancelled.")
        else:
            messages.success(request, f"Run #{run.pk}: cancel requested; it stops at its next step.")
    return redirect("training:run", pk=pk)


@role_required(Role.ADMIN)
@require_POST
def resume(request, pk: int):
    run = get_object_or_404(selectors.run(pk))
    try:
        services.resume_run(run=run)
    except TrainingRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Run #{run.pk} queued again; it continues from its last checkpoint.")
    return redirect("training:run", pk=pk)


# ---------------------------------------------------------------------------------------------
# The model registry


def _test_summary(version) -> dict:
    """Headline test figures: macro-F1 and accuracy (classifier), or mAP@0.5 and the image
    verdicts' accuracy (detector), in the same slots."""
    report = (version.metrics or {}).get("test") or {}
    if version.kind == "detector":
        verdict = report.get("verdict") or {}
        accuracy = reports.number(verdict.get("overall_accuracy"))
        return {"f1": reports.number(report.get("map")), "accuracy": accuracy,
                "accuracy_pct": None if accuracy is None else 100 * accuracy, "n": report.get("n")}
    average = report.get("average") or {}
    accuracy = reports.number(report.get("overall_accuracy"))
    return {"f1": reports.number(average.get("f1")), "accuracy": accuracy,
            "accuracy_pct": None if accuracy is None else 100 * accuracy, "n": report.get("n")}


@role_required(Role.ADMIN)
@require_GET
def models(request):
    versions = list(selectors.model_versions())
    kinds = []
    for kind, label in ModelKind.choices:
        promoted = next((v for v in versions if v.kind == kind and v.promoted), None)
        rows = [{"version": v, "test": _test_summary(v), "url": reverse("training:model", args=[v.pk]),
                 "check": None if v.promoted else check_promotion(v, promoted, lookup_current=False)}
                for v in versions if v.kind == kind]
        target = selectors.rollback_target(kind)
        kinds.append({"kind": kind, "label": label, "rows": rows, "rollback_to": target, "promoted": promoted,
                      "rollback_check": check_promotion(target, promoted, lookup_current=False) if target else None})
    floors = {name: getattr(settings, name) for name in ("PROMOTION_MIN_MACRO_F1", "PROMOTION_MIN_MAP")}
    return render(request, "training/models.html", {"kinds": kinds, "floors": floors})


@role_required(Role.ADMIN)
@require_GET
def model(request, pk: int):
    version = get_object_or_404(selectors.model_version(pk))
    metrics = version.metrics or {}
    confusion = f"{version.artifact_dir.rstrip('/')}/confusion.png"
    context = {
        "version": version,
        "test": _test_summary(version),
        "report": reports.report_rows((metrics.get("test") or {}).get("verdict") or {} if version.kind == "detector"
                               else metrics.get("test") or {}),
        "confusion_url": reverse("media", args=[confusion]) if default_storage.exists(confusion) else None,
        "curve": learning_curve(metrics.get("history") or [], (version.config.get("optim") or {}).get("epochs"),
                                metric_key(version.kind)),
        "no_curve_text": "No per-epoch history is stored with this version.",
        "best_val": reports.number(metrics.get("best_" + metric_key(version.kind))),
        "metric_name": metric_name(version.kind),
        "detector": reports.detector_report(metrics) if version.kind == "detector" else None,
        "config_summary": _config_summary(version.config or {}),
        "promotions": list(selectors.promotions(version.kind)),
        "rollback_to": selectors.rollback_target(version.kind),
        "check": None if version.promoted else check_promotion(version),
    }
    if context["rollback_to"] is not None:
        context["rollback_check"] = check_promotion(context["rollback_to"])
    return render(request, "training/model.html", context)


def _against(request):
    """The promoted version the person compared with (form field ``against``: a pk, or "none");
    False when the form did not say (nothing to check)."""
    raw = request.POST.get("against")
    if raw is None:
        return False
    if raw in ("", "none"):
        return None
    return ModelVersion.objects.filter(pk=int(raw)).first() if raw.isdigit() else None


@role_required(Role.ADMIN)
@require_POST
def promote(request, pk: int):
    version = get_object_or_404(selectors.model_version(pk))
    back = _safe_next(request, reverse("training:model", args=[version.pk]))
    if version.promoted:
        messages.info(request, f"{version.name} is already the promoted {version.kind}.")
        return redirect(back)
    try:
        services.promote(version=version, by=request.user, note=request.POST.get("note", "").strip()[:300],
                         confirm=request.POST.get("confirm") == "yes", against=_against(request))
    except PromotionNeedsConfirmation as exc:
        messages.error(request, str(exc))  # the version's page shows the comparison and the confirmation
        return redirect(reverse("training:model", args=[version.pk]) + "#promotion")
    except TrainingRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{version.name} promoted: inference now uses it for the {version.kind}.")
    return redirect(back)


@role_required(Role.ADMIN)
@require_POST
def rollback(request):
    kind = request.POST.get("kind", "")
    back = _safe_next(request, reverse("training:models"))
    if kind not in ModelKind.values:
        messages.error(request, "Choose which kind of model to roll back (classifier or detector).")
        return redirect(back)
    try:
        version = services.rollback(kind=kind, by=request.user, confirm=request.POST.get("confirm") == "yes",
                                    against=_against(request))
    except PromotionNeedsConfirmation as exc:
        messages.error(request, str(exc))  # the target's page shows the comparison and the confirmation
        return redirect(reverse("training:model", args=[exc.check.version.pk]) + "#rollback-check")
    except TrainingRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Rolled back: {version.name} is the promoted {kind} again.")
    return redirect(back)
