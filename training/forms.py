"""The "start a training run" form: reads and checks what the admin asked for and builds the
run's ClassifierRunConfig (the same checks as ``manage.py train``: counts at least 1, a known
preset, targets and augmentation the config classes accept)."""

from __future__ import annotations

from django import forms

from annotation.models import Dataset
from training.augment import AugmentConfig
from training.classifier.config import ClassifierRunConfig, DataConfig, OptimConfig
from training.smoothing import TargetConfig

#: training.networks.resnest.resnest_config.PRESETS, by name: importing that package loads
#: Keras/TensorFlow, which the web process never does (a test keeps the two lists the same).
PRESET_CHOICES = (
    ("resnest_tiny", "ResNeSt tiny (test size, 1/8 width)"),
    ("resnest14", "ResNeSt-14"),
    ("resnest26", "ResNeSt-26"),
    ("resnest50", "ResNeSt-50 (the paper's)"),
    ("resnest101", "ResNeSt-101"),
)
TARGET_CHOICES = (
    ("ordinal", "Ordinal label smoothing (the paper's)"),
    ("onehot", "One-hot (no smoothing)"),
    ("votes", "Expert vote shares (soft labels)"),
)
N_CHOICES = (("2", "n = 2"), ("3", "n = 3"))


class DatasetChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Dataset) -> str:
        images = getattr(obj, "image_count", None)
        latest = getattr(obj, "latest_version", None)
        parts = [obj.name]
        if images is not None:
            parts.append(f"{images} image{'s' if images != 1 else ''}")
        parts.append(f"split v{latest}" if latest else "no split yet")
        return " · ".join(parts)


class ClassifierRunForm(forms.Form):
    """Every option of a classifier run the page offers; ``config()`` gives the run config."""

    dataset = DatasetChoiceField(
        queryset=Dataset.objects.none(), empty_label=None,
        help_text="Trained on the dataset's latest frozen split (70/15/15 by image); "
                  "a dataset without one gets its first split now.",
    )
    preset = forms.ChoiceField(choices=PRESET_CHOICES, initial="resnest50")
    epochs = forms.IntegerField(min_value=1, max_value=1000, initial=30,
                                help_text="Maximum; early stopping on validation macro-F1 may end sooner.")
    batch_size = forms.IntegerField(min_value=1, max_value=1024, initial=16, label="Batch size",
                                    help_text="16 in the paper.")
    input_size = forms.IntegerField(min_value=32, max_value=1024, initial=224, label="Input size (px)",
                                    help_text="Side of the square crop; at least 32 (the network downsamples 32x).")
    learning_rate = forms.FloatField(min_value=1e-7, max_value=1.0, initial=1e-3, label="Learning rate",
                                     help_text="Adam; 0.001 is Keras' default.")
    targets = forms.ChoiceField(choices=TARGET_CHOICES, initial="ordinal", label="Targets")
    n = forms.TypedChoiceField(choices=N_CHOICES, coerce=float, initial="2", label="Smoothing base n",
                               help_text="y_i = n^-|k-i| (ordinal targets only).")
    oversample = forms.BooleanField(required=False, initial=True, label="36x oversampling",
                                    help_text="4 orientations x 9 filters per training crop.")
    scale = forms.BooleanField(required=False, initial=True, label="Scale augmentation")
    random_erasing = forms.BooleanField(required=False, initial=True, label="Random erasing")
    time_limit_min = forms.IntegerField(min_value=1, max_value=7 * 24 * 60, required=False,
                                        label="Time limit (minutes)",
                                        help_text="Optional: stop and keep the best epoch so far.")
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=0, label="Seed")

    def __init__(self, *args, datasets=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset"].queryset = datasets if datasets is not None else Dataset.objects.order_by("name")

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            self._config = self._build(cleaned)
        except ValueError as exc:  # the config classes' own checks
            raise forms.ValidationError(str(exc)) from None
        return cleaned

    @staticmethod
    def _build(c: dict) -> ClassifierRunConfig:
        time_limit = c["time_limit_min"] * 60 if c.get("time_limit_min") else None
        return ClassifierRunConfig(
            preset=c["preset"],
            data=DataConfig(input_size=c["input_size"]),
            targets=TargetConfig(kind=c["targets"], n=c["n"]),
            augment=AugmentConfig(oversample=c["oversample"], scale=c["scale"],
                                  random_erasing=c["random_erasing"]),
            optim=OptimConfig(epochs=c["epochs"], batch_size=c["batch_size"], learning_rate=c["learning_rate"],
                              time_limit_s=time_limit, seed=c["seed"]),
        )

    def config(self) -> ClassifierRunConfig:
        """The run config of a valid form."""
        if not self.is_valid():
            raise ValueError("the form is not valid")
        return self._config


#: training.networks.yolov4.presets.PRESETS, by name (the same reason as PRESET_CHOICES).
DETECTOR_PRESET_CHOICES = (
    ("yolov4_test", "YOLOv4 test size (1/8 width, 128 px)"),
    ("yolov4_tiny", "YOLOv4-tiny (416 px)"),
    ("yolov4", "YOLOv4 (608 px, the paper's)"),
)


class DetectorRunForm(forms.Form):
    """A YOLOv4 detector run (the page posts it with the "det" prefix beside the classifier's)."""

    dataset = DatasetChoiceField(queryset=Dataset.objects.none(), empty_label=None,
                                 help_text="Whole images of the latest split; the five atypical grades are the "
                                           "classes, an image without atypical boxes teaches what not to find.")
    preset = forms.ChoiceField(choices=DETECTOR_PRESET_CHOICES, initial="yolov4")
    input_size = forms.IntegerField(min_value=32, max_value=1536, required=False, label="Input size (px)",
                                    help_text="A multiple of 32; empty: the preset's.")
    epochs = forms.IntegerField(min_value=1, max_value=1000, initial=50,
                                help_text="Maximum; early stopping on validation mAP@0.5 may end sooner.")
    batch_size = forms.IntegerField(min_value=1, max_value=256, initial=8, label="Batch size")
    learning_rate = forms.FloatField(min_value=1e-7, max_value=1.0, initial=1e-3, label="Peak learning rate",
                                     help_text="AdamW; linear warm-up for one epoch, then cosine decay.")
    anchors = forms.ChoiceField(choices=(("kmeans", "IoU k-means on the training boxes"),
                                         ("preset", "The preset's (Darknet's)")), initial="kmeans")
    oversample = forms.BooleanField(required=False, initial=True, label="36x oversampling",
                                    help_text="4 orientations x 9 filters per training image, boxes moved along.")
    mosaic = forms.BooleanField(required=False, initial=True, label="Mosaic")
    time_limit_min = forms.IntegerField(min_value=1, max_value=7 * 24 * 60, required=False,
                                        label="Time limit (minutes)")
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=0, label="Seed")

    def __init__(self, *args, datasets=None, **kwargs):
        kwargs.setdefault("prefix", "det")
        super().__init__(*args, **kwargs)
        self.fields["dataset"].queryset = datasets if datasets is not None else Dataset.objects.order_by("name")

    def clean(self):
        from training.detector.config import (
            DetectorAugmentConfig,
            DetectorOptimConfig,
            DetectorRunConfig,
        )

        cleaned = super().clean()
        if self.errors:
            return cleaned
        c = cleaned
        try:
            self._config = DetectorRunConfig(
                preset=c["preset"], input_size=c.get("input_size"), anchors=c["anchors"],
                augment=DetectorAugmentConfig(oversample=c["oversample"], mosaic=c["mosaic"]),
                optim=DetectorOptimConfig(epochs=c["epochs"], batch_size=c["batch_size"],
                                          learning_rate=c["learning_rate"], seed=c["seed"],
                                          time_limit_s=c["time_limit_min"] * 60 if c.get("time_limit_min") else None),
            )
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return cleaned

    def config(self):
        if not self.is_valid():
            raise ValueError("the form is not valid")
        return self._config
