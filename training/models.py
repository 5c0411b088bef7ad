"""The training app's ORM: dataset versions, training runs, model versions, promotions.

The Keras networks (ResNeSt, YOLOv4) live in ``training/networks/``, pure Keras with no Django
import; this module never imports them, so loading Django never loads TensorFlow.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q, UniqueConstraint

from cytoloop.models import Job


class ModelKind(models.TextChoices):
    CLASSIFIER = "classifier", "classifier (ResNeSt)"
    DETECTOR = "detector", "detector (YOLOv4)"


class DatasetVersion(models.Model):
    """A frozen split of a dataset's images (70/15/15 by image, stratified by grade)."""

    dataset = models.ForeignKey("annotation.Dataset", on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    seed = models.IntegerField(default=0)
    splits = models.JSONField(help_text='{"train": [image ids], "val": [...], "test": [...]}')
    counts = models.JSONField(default=dict, help_text="images and clusters per split and label")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "-number"]
        constraints = [UniqueConstraint(fields=["dataset", "number"], name="one_number_per_dataset_version")]

    def __str__(self) -> str:
        return f"{self.dataset.name} v{self.number}"


class TrainingRun(Job):
    kind = models.CharField(max_length=12, choices=ModelKind.choices)
    dataset_version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="runs")
    config = models.JSONField(help_text="the full run configuration (frozen dataclasses as JSON)")
    history = models.JSONField(default=list, blank=True, help_text="one entry per finished epoch")
    best_metric = models.FloatField(null=True, blank=True)
    best_epoch = models.PositiveIntegerField(null=True, blank=True)
    checkpoint_dir = models.CharField(max_length=500, blank=True)
    cancel_requested = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta(Job.Meta):
        pass

    def __str__(self) -> str:
        return f"{self.kind} run {self.pk} ({self.status})"

    def progress_counts(self) -> tuple[int | None, int | None]:
        """Steps done of epochs x steps (progress: step, steps, epoch, epochs, loss, val metrics, eta_s)."""
        p = self.progress or {}
        epoch, epochs, step, steps = (p.get(k) for k in ("epoch", "epochs", "step", "steps"))
        if not all(isinstance(v, int) and v >= 0 for v in (epoch, epochs, step, steps)) or not epochs or not steps:
            return None, None
        return (max(epoch, 1) - 1) * steps + min(step, steps), epochs * steps


class ModelVersion(models.Model):
    kind = models.CharField(max_length=12, choices=ModelKind.choices)
    name = models.CharField(max_length=100, unique=True)
    run = models.OneToOneField(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="model_version")
    dataset_version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="model_versions")
    artifact_dir = models.CharField(max_length=500, help_text="media-relative folder: SavedModel, .keras, report")
    config = models.JSONField()
    metrics = models.JSONField(help_text="evaluation report on the test split")
    promoted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            UniqueConstraint(fields=["kind"], condition=Q(promoted=True), name="one_promoted_version_per_kind"),
        ]

    def __str__(self) -> str:
        return self.name


class Promotion(models.Model):
    """Which version served inference when (rollback promotes the previous one again): the
    promotion's audit record, with the figures it was decided on (``training.promotion``)."""

    class Action(models.TextChoices):
        PROMOTE = "promote"
        ROLLBACK = "rollback"

    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="promotions")
    kind = models.CharField(max_length=12, choices=ModelKind.choices)
    promoted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    promoted_at = models.DateTimeField(auto_now_add=True)
    note = models.CharField(max_length=300, blank=True)
    action = models.CharField(max_length=10, choices=Action.choices, default=Action.PROMOTE)
    previous = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                 help_text="the version that stepped down (none: nothing was promoted)")
    figures = models.JSONField(default=dict, blank=True,
                               help_text="test figures of this version and of the previous one, and the floors")
    concerns = models.JSONField(default=list, blank=True,
                                help_text="why it needed a confirmation (worse than the previous, below a floor)")
    confirmed = models.BooleanField(default=False, help_text="promoted despite the concerns, on explicit confirmation")

    class Meta:
        ordering = ["-promoted_at", "-id"]

    def __str__(self) -> str:
        return f"{self.model_version} promoted"
