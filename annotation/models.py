"""Datasets, images, ground truth, imported predictions and expert annotations.

Boxes are stored in original-image pixels (x, y = top-left, width, height; floats).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import CheckConstraint, Q, UniqueConstraint

from annotation.bethesda import BETHESDA, DESCRIPTIONS
from annotation.geometry import Box
from cytoloop.models import Job

LABEL_CHOICES = [(name, f"{name} ({DESCRIPTIONS[name]})") for name in BETHESDA]


class Dataset(models.Model):
    name = models.SlugField(max_length=100, unique=True, help_text="short name used on the command line")
    title = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    source = models.CharField(max_length=300, blank=True, help_text="where the images come from")
    license = models.CharField(max_length=100, blank=True)
    citation = models.TextField(blank=True, help_text="how to cite the images when shown or reported")
    experts_per_image = models.PositiveSmallIntegerField(default=3)
    #: Label Studio project mirroring this dataset (set by annotation.labelstudio.ensure_project)
    ls_project_id = models.PositiveIntegerField(null=True, blank=True, unique=True)
    ls_storage_id = models.PositiveIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Image(models.Model):
    class Split(models.TextChoices):
        UNASSIGNED = "unassigned"
        TRAIN = "train"
        VAL = "val"
        TEST = "test"

    class Source(models.TextChoices):
        UPLOAD = "upload", "browser upload"
        IMPORT = "import", "import command"
        SYNTHETIC = "synthetic", "synthetic generator"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="images")
    file = models.FileField(upload_to="images/", max_length=300)
    thumbnail = models.FileField(upload_to="thumbs/", max_length=300, blank=True)
    original_name = models.CharField(max_length=500, help_text="path inside the imported folder or zip")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=10)
    checksum = models.CharField(max_length=64, help_text="sha256 of the file's bytes")
    source = models.CharField(max_length=20, choices=Source.choices)
    split = models.CharField(max_length=12, choices=Split.choices, default=Split.UNASSIGNED, db_index=True)
    #: Label Studio task for this image
    ls_task_id = models.PositiveIntegerField(null=True, blank=True, unique=True)
    #: order in the pathologists' queues (lower first; set by ranking rounds; null = after ranked)
    queue_rank = models.FloatField(null=True, blank=True, db_index=True)
    #: when consensus was first computed: until then experts stay blind to each other
    consensus_at = models.DateTimeField(null=True, blank=True)
    #: model_version name of the predictions the editor may offer as pre-annotations ("" = none);
    #: written by inference (ranking rounds), read by the editor, so annotation never asks inference
    preannotation_model = models.CharField(max_length=100, blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "original_name", "id"]
        constraints = [
            UniqueConstraint(fields=["dataset", "checksum"], name="image_unique_checksum_per_dataset"),
            UniqueConstraint(fields=["dataset", "original_name"], name="image_unique_name_per_dataset"),
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name}/{self.original_name}"


class BoxFields(models.Model):
    x = models.FloatField()
    y = models.FloatField()
    width = models.FloatField()
    height = models.FloatField()
    label = models.CharField(max_length=8, choices=LABEL_CHOICES)

    class Meta:
        abstract = True
        constraints = [
            CheckConstraint(
                condition=Q(width__gt=0) & Q(height__gt=0) & Q(x__gte=0) & Q(y__gte=0),
                name="%(class)s_positive_box",
            ),
            CheckConstraint(condition=Q(label__in=BETHESDA), name="%(class)s_bethesda_label"),
        ]

    def as_box(self) -> Box:
        return Box(self.x, self.y, self.width, self.height, self.label, getattr(self, "score", None))


class CurrentGroundTruthManager(models.Manager):
    """Only the current truth: every reader (training export, simulated experts, dashboards,
    Label Studio) gets one box per lesion without having to remember a filter."""

    def get_queryset(self):
        return super().get_queryset().filter(superseded_at__isnull=True)


class GroundTruthBox(BoxFields):
    """One box of an image's ground truth, with its provenance.

    One current box per lesion: a later source supersedes an earlier one (precedence: imported
    reference < consensus < reviewer decision) and the earlier row is kept as history
    (``superseded_at``/``superseded_by``), never deleted and never duplicated. ``objects`` (the
    default manager, also behind ``image.ground_truth``) returns current rows only;
    ``with_history`` returns every row."""

    class Source(models.TextChoices):
        IMPORT = "import", "imported reference"
        CONSENSUS = "consensus"
        REVIEW = "review", "reviewer decision"

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="ground_truth")
    source = models.CharField(max_length=12, choices=Source.choices)
    # CRIC-style point labels: the box was made around this nucleus point (reviewers may correct it)
    point_x = models.FloatField(null=True, blank=True)
    point_y = models.FloatField(null=True, blank=True)
    #: the consensus cluster this box came from (kept as a plain id: clusters are recomputed)
    cluster_id_at_source = models.PositiveBigIntegerField(null=True, blank=True)
    #: who decided it (reviewer decisions)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    superseded_at = models.DateTimeField(null=True, blank=True, db_index=True)
    superseded_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="supersedes")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = CurrentGroundTruthManager()
    with_history = models.Manager()  # noqa: DJ012 (a second manager, not a field)

    class Meta(BoxFields.Meta):
        ordering = ["image", "id"]
        default_manager_name = "objects"
        base_manager_name = "with_history"

    def __str__(self) -> str:
        return f"{self.label} @ ({self.x:.0f}, {self.y:.0f}) on image {self.image_id}"

    @property
    def from_point(self) -> bool:
        return self.point_x is not None


class PredictionBox(BoxFields):
    """A box some model proposed: imported from a file, or from CytoLoop's own models."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="predictions")
    score = models.FloatField(null=True, blank=True)
    model_version = models.CharField(max_length=100, default="imported")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta(BoxFields.Meta):
        ordering = ["image", "-score", "id"]

    def __str__(self) -> str:
        return f"{self.label} {self.score} by {self.model_version}"


class ExpertAnnotation(models.Model):
    """One expert's submitted boxes for one image (blind: others never see it before consensus)."""

    class Origin(models.TextChoices):
        EDITOR = "editor", "CytoLoop editor"
        LABEL_STUDIO = "label_studio", "Label Studio"
        SIMULATED = "simulated", "simulated expert"

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="expert_annotations")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="annotations")
    origin = models.CharField(max_length=16, choices=Origin.choices)
    #: the same annotation in Label Studio (null until pushed or when mirrored from there)
    ls_annotation_id = models.PositiveIntegerField(null=True, blank=True, unique=True)
    #: bumped by every save; a save must name the revision it was edited from (409 otherwise)
    revision = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["image", "annotator"]
        constraints = [
            UniqueConstraint(fields=["image", "annotator"], name="one_annotation_per_expert_per_image"),
        ]

    def __str__(self) -> str:
        return f"{self.annotator} on image {self.image_id}"


class ExpertBox(BoxFields):
    annotation = models.ForeignKey(ExpertAnnotation, on_delete=models.CASCADE, related_name="boxes")
    #: the model's box this one started from (a pre-annotation), if any
    prediction = models.ForeignKey("PredictionBox", null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    #: the model_version of that pre-annotation ("" = drawn by the expert); kept if the row goes
    prediction_model = models.CharField(max_length=100, blank=True, default="")
    #: None: drawn by the expert; False: the model's box accepted unchanged; True: edited
    prediction_changed = models.BooleanField(null=True, blank=True)

    class Meta(BoxFields.Meta):
        ordering = ["annotation", "id"]

    def __str__(self) -> str:
        return f"{self.label} by annotation {self.annotation_id}"

    @property
    def accepted_unchanged(self) -> bool:
        return bool(self.prediction_model) and self.prediction_changed is False


class ImportJob(Job):
    """A browser import running on a worker: progress and every skipped file's reason."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="import_jobs")
    upload_dir = models.CharField(max_length=500)
    annotations_name = models.CharField(max_length=300, blank=True)
    as_predictions = models.BooleanField(default=False)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    imported = models.PositiveIntegerField(default=0)
    boxes = models.PositiveIntegerField(default=0)
    skipped = models.JSONField(default=list, blank=True, help_text="[{name, reason, message}]")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)

    class Meta(Job.Meta):
        pass

    def __str__(self) -> str:
        return f"import {self.pk} into {self.dataset} ({self.status})"

    def progress_counts(self) -> tuple[int | None, int | None]:
        return self.processed, self.total


class LabelStudioAccount(models.Model):
    """The Label Studio user a CytoLoop user annotates as (completed_by)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ls_account")
    ls_user_id = models.PositiveIntegerField(unique=True)

    def __str__(self) -> str:
        return f"{self.user} = Label Studio user {self.ls_user_id}"


class Assignment(models.Model):
    """An image handed to one expert: locked to them until submitted, skipped or expired."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        SUBMITTED = "submitted"
        SKIPPED = "skipped"
        RELEASED = "released", "released (timed out)"

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    #: extra expert asked for by a reviewer (counts beyond the dataset's experts_per_image)
    extra = models.BooleanField(default=False)
    assigned_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-assigned_at"]
        constraints = [
            UniqueConstraint(fields=["image", "annotator"], name="one_assignment_per_expert_per_image"),
            UniqueConstraint(
                fields=["image"], condition=Q(status="active"), name="one_active_assignment_per_image"
            ),
        ]

    def __str__(self) -> str:
        return f"image {self.image_id} -> {self.annotator} ({self.status})"


class AnnotationDraft(models.Model):
    """Work in progress on one assignment, saved as the expert draws: restored on reload or on
    coming back later, removed when the annotation is submitted."""

    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="draft")
    #: boxes in image pixels, as the editor last had them: [{x, y, width, height, label, ...}]
    boxes = models.JSONField(default=list)
    #: the ExpertAnnotation revision the draft was edited from (null: nothing submitted yet)
    base_revision = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"draft of assignment {self.assignment_id}"


class OutboxMessage(models.Model):
    """Work for Label Studio kept in the database until it is done: nothing is lost while
    Label Studio or the broker is down."""

    class Kind(models.TextChoices):
        PUSH_ANNOTATION = "push_annotation"
        PUSH_GROUND_TRUTH = "push_ground_truth"
        PUSH_PREDICTIONS = "push_predictions"
        PUSH_TASKS = "push_tasks"

    class Status(models.TextChoices):
        PENDING = "pending"
        DONE = "done"
        DEAD = "dead", "failed permanently"

    kind = models.CharField(max_length=24, choices=Kind.choices)
    object_id = models.PositiveBigIntegerField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # one pending message per object: a second submit before the push is folded into it
            UniqueConstraint(
                fields=["kind", "object_id"], condition=Q(status="pending"), name="one_pending_message_per_object"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.object_id} ({self.status})"


class Cluster(models.Model):
    """Experts' boxes that mark the same cell cluster on one image, with their vote.

    Computed by consensus (annotation/consensus.py) from the image's expert annotations;
    disputed clusters go to reviewers, whose decisions are recorded in AuditEntry."""

    class Status(models.TextChoices):
        AGREED = "agreed"
        DISPUTED = "disputed"
        RESOLVED = "resolved", "resolved by a reviewer"
        REJECTED = "rejected", "rejected (not a lesion)"

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="clusters")
    x = models.FloatField()
    y = models.FloatField()
    width = models.FloatField()
    height = models.FloatField()
    label = models.CharField(max_length=8, choices=LABEL_CHOICES, help_text="the vote's winner")
    votes = models.JSONField(help_text="vote distribution over the six classes (sums to 1)")
    members = models.JSONField(help_text="[{annotation, box, expert, label, x, y, width, height}]")
    status = models.CharField(max_length=10, choices=Status.choices, db_index=True)
    reasons = models.JSONField(default=list, blank=True)
    vote_share = models.FloatField()
    mean_iou = models.FloatField()
    n_experts_found = models.PositiveSmallIntegerField()
    n_experts = models.PositiveSmallIntegerField()
    #: clinical risk of the disagreement (higher first in the reviewers' queue)
    risk = models.FloatField(default=0.0, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="resolved_clusters")

    class Meta:
        ordering = ["image", "id"]
        indexes = [models.Index(fields=["status", "-risk", "created_at"])]

    def __str__(self) -> str:
        return f"cluster {self.pk} on image {self.image_id}: {self.label} ({self.status})"

    def as_box(self) -> Box:
        return Box(self.x, self.y, self.width, self.height, self.label)


class ConsensusState(models.Model):
    """What the image's current clusters were computed from, so reruns on the same
    annotations change nothing."""

    image = models.OneToOneField(Image, on_delete=models.CASCADE, related_name="consensus_state")
    signature = models.CharField(max_length=64)
    computed_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"consensus of image {self.image_id}"


class AuditEntry(models.Model):
    """Append-only record of every review decision: who, when, before, after."""

    class Action(models.TextChoices):
        SET_LABEL = "set_label"
        ADJUST_BOX = "adjust_box"
        REJECT = "reject"
        ACCEPT = "accept"
        REQUEST_EXPERT = "request_expert"
        COMMENT = "comment"

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="audit_entries")
    action = models.CharField(max_length=16, choices=Action.choices)
    image = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="audit_entries")
    # the log outlives recomputed clusters: it keeps the id it was written with (no cascade, no
    # update of an append-only row)
    cluster = models.ForeignKey(Cluster, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False,
                                related_name="audit_entries")
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} on image {self.image_id}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ValueError("audit entries are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("audit entries are append-only")


class ExpertReliability(models.Model):
    """Each expert's reliability on a dataset, by Dawid-Skene over its clusters (see
    annotation.agreement); consensus may weight votes by it (CONSENSUS_WEIGHTING=reliability)."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="reliabilities")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reliabilities")
    reliability = models.FloatField()
    agreement = models.FloatField(help_text="share of this expert's cluster labels equal to consensus")
    n_clusters = models.PositiveIntegerField()
    confusion = models.JSONField(help_text="6x6 counts: rows consensus label, columns this expert's label")
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [UniqueConstraint(fields=["dataset", "user"], name="one_reliability_per_expert_per_dataset")]

    def __str__(self) -> str:
        return f"{self.user} on {self.dataset}: {self.reliability:.2f}"
