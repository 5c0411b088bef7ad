"""The CytoLoop Django project: settings, URLs, the Celery app, roles."""

from cytoloop.celery import app as celery_app

__all__ = ("celery_app",)
