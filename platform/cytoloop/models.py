"""The platform's own tables: permissions (what each role may do), the abstract background job
every app's job rows share, and the enqueues kept while the broker was unreachable."""

from __future__ import annotations

from django.db import models


class Capability(models.Model):
    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("annotate", "Annotate images in the personal queue"),
            ("review", "Resolve disputed clusters"),
            ("manage_datasets", "Import, export and manage datasets"),
            ("manage_users", "Manage users and roles"),
            ("train_models", "Start training runs and promote model versions"),
            ("run_rounds", "Start ranking rounds"),
        ]

    def __str__(self) -> str:
        return "CytoLoop capabilities"


class JobStatus(models.TextChoices):
    """The one status vocabulary of every background job (import, training, prediction...)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted", "interrupted (worker lost; can resume)"


#: Statuses after which a job does nothing more by itself.
FINISHED_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED})


class Job(models.Model):
    """What every background job row has: status, progress, error, timings and its worker.

    ``progress`` is a JSON object; ``done`` and ``total`` (integers) are what the one progress
    bar shows, other keys are the kind's own (epoch, loss, skipped...). A kind whose counts live
    elsewhere overrides :meth:`progress_counts`. Rows are queued with
    ``cytoloop.jobs.enqueue_on_commit``, which records the broker's task id in ``task_id``.
    """

    Status = JobStatus

    status = models.CharField(max_length=12, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True)
    progress = models.JSONField(default=dict, blank=True, help_text="done, total and the kind's own figures")
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=64, blank=True, help_text="the broker's id of the last enqueue")
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    def progress_counts(self) -> tuple[int | None, int | None]:
        """(done, total) for the progress bar; None where unknown."""
        p = self.progress or {}
        return p.get("done"), p.get("total")

    @property
    def percent(self) -> int:
        """0..100 for the progress bar (a succeeded job: 100)."""
        if self.status == JobStatus.SUCCEEDED:
            return 100
        done, total = self.progress_counts()
        if not isinstance(done, int) or not isinstance(total, int) or total <= 0:
            return 0
        return max(0, min(100, int(100 * done / total)))

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def is_active(self) -> bool:
        return self.status in (JobStatus.QUEUED, JobStatus.RUNNING)


class PendingEnqueue(models.Model):
    """A task the broker did not take when it was sent (Redis down): kept here and sent again by
    the periodic ``cytoloop.send_pending_enqueues`` once the broker is back. One row per task and
    arguments (sending twice is harmless: every task is idempotent)."""

    task_name = models.CharField(max_length=200)
    args = models.JSONField(default=list)
    args_key = models.CharField(max_length=200, help_text="json of args, for uniqueness")
    job_model = models.CharField(max_length=100, blank=True, help_text="app_label.Model whose task_id to set")
    job_id = models.BigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [models.UniqueConstraint(fields=["task_name", "args_key"], name="one_pending_enqueue_per_task")]

    def __str__(self) -> str:
        return f"pending {self.task_name}{tuple(self.args)}"
