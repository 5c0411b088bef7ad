"""Inference tasks (gpu queue by their ``inference.`` names): thin; TensorFlow loads inside."""

from celery import shared_task


@shared_task(name="inference.predict", acks_late=True, reject_on_worker_lost=True)
def predict_task(job_id: int) -> str:
    from inference.services import run_prediction_job

    return run_prediction_job(job_id).status
