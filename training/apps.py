from importlib import import_module

from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"

    def import_models(self):
        # The ORM lives in training/records.py: training/models/ is the package of pure Keras
        # networks (no Django import allowed there), so Django's default "training.models"
        # would be the wrong module.
        self.models = self.apps.all_models[self.label]
        self.models_module = import_module(f"{self.name}.records")
