"""Annotation tasks: thin, idempotent, ids only."""

from celery import shared_task


@shared_task(name="annotation.run_import_job", acks_late=True, reject_on_worker_lost=True)
def run_import_job_task(job_id: int) -> str:
    from annotation.services import run_import_job

    return run_import_job(job_id).status
