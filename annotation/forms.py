"""The review page's POST: which action the reviewer took and what it needs, checked before any
service runs (an error here is a 400 with the message shown on the page, nothing changed).

Actions: ``label`` (one of the six Bethesda classes), ``box`` (x, y, width, height in image pixels,
finite, and a label that defaults to the cluster's), ``reject``, ``expert`` (one more expert) and
``comment`` (its ``text``; an empty one is refused by the service). ``note`` goes with any
decision; ``confirm`` carries the token of a confirmation the reviewer was shown.
"""

from __future__ import annotations

import math

from django import forms

from annotation.bethesda import BETHESDA
from annotation.geometry import Box
from annotation.review_decisions import Decision

ACTIONS = ("label", "box", "reject", "expert", "comment")
BOX_FIELDS = ("x", "y", "width", "height")

UNKNOWN_ACTION = "Unknown action."
NOT_A_CLASS = "Choose one of the six Bethesda classes."
NOT_NUMBERS = "The box needs four numbers: x, y, width and height (in image pixels)."
NOT_FINITE = "The box's x, y, width and height must be finite numbers."


class ReviewDecisionForm(forms.Form):
    """One decision (or comment) on a cluster; ``cluster`` gives the label a box keeps by default."""

    action = forms.ChoiceField(choices=[(a, a) for a in ACTIONS],
                               error_messages={"required": UNKNOWN_ACTION, "invalid_choice": UNKNOWN_ACTION})
    label = forms.CharField(required=False, strip=False)
    x = forms.CharField(required=False, strip=False)
    y = forms.CharField(required=False, strip=False)
    width = forms.CharField(required=False, strip=False)
    height = forms.CharField(required=False, strip=False)
    note = forms.CharField(required=False)
    text = forms.CharField(required=False)
    confirm = forms.CharField(required=False)

    def __init__(self, *args, cluster, **kwargs):
        super().__init__(*args, **kwargs)
        self.cluster = cluster

    def clean(self) -> dict:
        data = super().clean()
        action = data.get("action")
        if action == "label" and data.get("label") not in BETHESDA:
            raise forms.ValidationError(NOT_A_CLASS)
        if action == "box":
            try:
                numbers = tuple(float(data.get(k, "")) for k in BOX_FIELDS)
            except ValueError:
                raise forms.ValidationError(NOT_NUMBERS) from None
            if not all(math.isfinite(n) for n in numbers):
                raise forms.ValidationError(NOT_FINITE)
            data["label"] = data.get("label") or self.cluster.label
            if data["label"] not in BETHESDA:
                raise forms.ValidationError(NOT_A_CLASS)
            data["numbers"] = numbers
            data["box"] = Box(*numbers, label=data["label"])
        return data

    def error_text(self) -> str:
        """The first thing wrong, in words (the page shows one message)."""
        errors = self.errors.get("action") or self.non_field_errors() or next(iter(self.errors.values()))
        return errors[0]

    def decision(self) -> Decision | None:
        """What review_decisions weighs for a confirmation (None: the action decides nothing)."""
        data = self.cleaned_data
        if data["action"] == "label":
            return Decision("label", data["label"])
        if data["action"] == "box":
            return Decision("box", data["label"], data["numbers"])
        if data["action"] == "reject":
            return Decision("reject")
        return None
