from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    name = "annotation"

    def ready(self):
        from annotation import drafts  # noqa: F401  (connects: a held image is released on log-out)
