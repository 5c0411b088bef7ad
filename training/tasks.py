"""Training tasks (gpu queue): thin; TensorFlow is imported inside the service at run time."""

from celery import shared_task
from django.conf import settings


@shared_task(
    name="training.run",
    acks_late=True,
    reject_on_worker_lost=True,  # a killed worker's run is redelivered and resumes from its checkpoint
    time_limit=settings.TRAINING_TIME_LIMIT_S,
    soft_time_limit=max(60, settings.TRAINING_TIME_LIMIT_S - 60),
)
def train_task(run_id: int) -> str:
    from training.services import execute_run

    return execute_run(run_id).status


@shared_task(name="training.mark_interrupted")
def mark_interrupted_task() -> int:
    from training.services import mark_interrupted_runs

    return mark_interrupted_runs()
