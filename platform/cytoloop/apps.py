from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CytoloopConfig(AppConfig):
    name = "cytoloop"
    verbose_name = "CytoLoop platform"

    def ready(self) -> None:
        post_migrate.connect(_ensure_roles_after_migrate, sender=self)


def _ensure_roles_after_migrate(sender, using="default", **kwargs) -> None:
    from cytoloop.roles import ensure_roles

    ensure_roles(using=using)
