"""The Active learning page's two forms: predict a dataset, start a ranking round.

The forms check what a form can (a dataset that exists, a whole k in range); everything else
(no promoted models, nothing to rank, a strategy rounds cannot use) is the service's refusal,
which the page shows as the form's error.
"""

from __future__ import annotations

from django import forms

from annotation.models import Dataset
from inference.strategies import DEFAULT_ROUND_STRATEGY, ROUND_STRATEGIES, STRATEGIES

MAX_K = 10_000


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class PredictDatasetChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Dataset) -> str:
        images = getattr(obj, "image_count", None)
        return obj.name if images is None else f"{obj.name} · {_plural(images, 'image')}"


class RankDatasetChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Dataset) -> str:
        pool = getattr(obj, "pool_count", None)
        return obj.name if pool is None else f"{obj.name} · {_plural(pool, 'unreviewed predicted image')}"


class PredictForm(forms.Form):
    dataset = PredictDatasetChoiceField(
        queryset=Dataset.objects.none(), empty_label=None,
        help_text="Every image of the dataset; images these model versions already predicted are skipped.",
    )
    push_to_label_studio = forms.BooleanField(
        required=False, initial=True, label="Push to Label Studio",
        help_text="Send each image's predicted boxes to its Label Studio task as a pre-annotation "
                  "(experts see them only in rounds that allow pre-annotations).",
    )

    def __init__(self, *args, datasets=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset"].queryset = datasets if datasets is not None else Dataset.objects.order_by("name")


class StrategySelect(forms.Select):
    """Offers the registry's ``ROUND_STRATEGIES`` while the field accepts any name (the service
    asks the registry, whose refusal says why a name cannot rank a round)."""

    def __init__(self, attrs=None):
        super().__init__(attrs, choices=[(name, STRATEGIES[name].label) for name in ROUND_STRATEGIES])


class RankingRoundForm(forms.Form):
    dataset = RankDatasetChoiceField(
        queryset=Dataset.objects.none(), empty_label=None,
        help_text="Its images without consensus that the promoted models predicted.",
    )
    # a CharField, not a ChoiceField: a strategy the form does not offer reaches the service,
    # whose refusal says why (e.g. the TTA strategies need predictions jobs do not store)
    strategy = forms.CharField(max_length=40, initial=DEFAULT_ROUND_STRATEGY, widget=StrategySelect,
                               help_text="How a cluster's uncertainty is scored; an image scores as its "
                                         "most uncertain cluster.")
    k = forms.IntegerField(min_value=1, max_value=MAX_K, initial=20, label="k (images to send)",
                           help_text="The k first images lead the experts' queues, in rank order.")
    diverse = forms.BooleanField(
        required=False, label="Diverse picks",
        help_text="k-center greedy on the classifier's embeddings among the top scores, so the k "
                  "images are not k near-copies of one uncertain case.")
    allow_preannotations = forms.BooleanField(
        required=False, label="Allow pre-annotations",
        help_text="The selected images show the model's boxes in the editor, for the experts to "
                  "correct. Off: the experts annotate blind.")

    def __init__(self, *args, datasets=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset"].queryset = datasets if datasets is not None else Dataset.objects.order_by("name")

    def clean_strategy(self) -> str:
        return self.cleaned_data["strategy"].strip()
