"""Annotation tasks: thin, idempotent, ids only."""

from celery import shared_task

from annotation.models import Dataset, Image
from annotation.services import (
    compute_consensus,
    consensus_sweep,
    flush_outbox,
    reconcile_label_studio,
    run_import_job,
)


@shared_task(name="annotation.run_import_job", acks_late=True, reject_on_worker_lost=True)
def run_import_job_task(job_id: int) -> str:
    return run_import_job(job_id).status


@shared_task(name="annotation.flush_outbox", acks_late=True, ignore_result=True)
def flush_outbox_task() -> dict:
    return flush_outbox()


@shared_task(name="annotation.reconcile_label_studio", acks_late=True)
def reconcile_label_studio_task(dataset_id: int | None = None) -> dict:
    dataset = Dataset.objects.get(pk=dataset_id) if dataset_id else None
    return reconcile_label_studio(dataset=dataset)


@shared_task(name="annotation.compute_consensus", acks_late=True)
def compute_consensus_task(image_id: int) -> str:
    image = Image.objects.select_related("dataset").filter(pk=image_id).first()
    return compute_consensus(image=image) if image else "no such image"


@shared_task(name="annotation.consensus_sweep", acks_late=True)
def consensus_sweep_task() -> dict:
    return consensus_sweep()
