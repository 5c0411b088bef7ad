"""The platform's own permissions: what each role may do. No table: only permissions hang here."""

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
