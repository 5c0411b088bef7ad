"""Training tasks (gpu queue): thin; TensorFlow is imported inside the service at run time."""

from celery import shared_task
from django.conf import settings


@shared_task(
    name="training.run",
    acks_late=True,
    # A killed pool child: the message goes back to the queue at once (reject_on_worker_lost) and
    # the run resumes from its checkpoint. A whole worker killed (SIGKILL, lost host): its run stops
    # beating, the "training.mark_interrupted" sweep marks it interrupted within a minute and queues
    # it again once (TRAINING_AUTO_RESUME); the broker's own copy comes back only after its
    # visibility_timeout and finds the run running or finished (execute_run is idempotent).
    reject_on_worker_lost=True,
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
