"""Which review decisions must be confirmed first, and what the confirmation says.

Pure (no Django import): the review page (annotation/review_views.py) asks ``confirmation`` before
calling a service; a decision that needs one is refused until the reviewer posts it back with the
``token`` of the statement they were shown. The token is a digest of the decision and of the
cluster's state, so a confirmation of a statement that no longer holds (someone else decided in
the meantime, the votes changed) is asked again with the new statement.

Needs a confirmation:
- a rejection ("not a lesion": the cluster leaves the ground truth);
- a grade that overrides a majority of atypical votes: more than half of the image's experts gave
  an atypical grade and the decision is NILM, or one atypical grade holds that majority and the
  decision is another grade;
- any change of a decision already taken (resolved or rejected): the earlier one stays in the
  audit trail.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

from annotation.bethesda import BETHESDA

NEGATIVE = BETHESDA[0]
DECIDED = ("resolved", "rejected")


@dataclass(frozen=True)
class ClusterFacts:
    """What a decision is weighed against (plain values read from a Cluster row)."""

    pk: int
    status: str
    label: str
    votes: tuple[str, ...]  # the grade each expert who drew the cluster gave
    n_experts: int  # the image's experts (those who drew nothing here count as not atypical)
    risk: float
    decided_by: str = ""
    decided_at: str = ""  # already formatted for people ("3 Dec 2026, 06:56 UTC")
    stamp: str = ""  # the exact time of the last decision (isoformat): part of the token


@dataclass(frozen=True)
class Decision:
    action: str  # "label", "box" or "reject"
    label: str = ""
    box: tuple[float, float, float, float] | None = None


def _tally(votes: tuple[str, ...]) -> str:
    counts = Counter(votes)
    parts = [f"{lab} ×{counts[lab]}" if counts[lab] > 1 else lab for lab in BETHESDA if counts[lab]]
    return ", ".join(parts) if parts else "no votes"


def _majority(facts: ClusterFacts) -> tuple[int, str | None]:
    """(experts who gave an atypical grade, the atypical grade a majority of experts gave or None)."""
    atypical = [v for v in facts.votes if v != NEGATIVE]
    half = facts.n_experts / 2
    counts = Counter(atypical)
    leader = next((lab for lab, n in counts.most_common(1) if n > half), None)
    return len(atypical), leader


def _earlier(facts: ClusterFacts) -> str:
    what = f"resolved as {facts.label}" if facts.status == "resolved" else "rejected as not a lesion"
    who = f" by {facts.decided_by}" if facts.decided_by else ""
    when = f" on {facts.decided_at}" if facts.decided_at else ""
    return what + who + when


def confirmation(facts: ClusterFacts, decision: Decision) -> str | None:
    """The statement the reviewer must confirm before ``decision`` is taken, or None."""
    votes = f"{len(facts.votes)} of {facts.n_experts} experts drew it: {_tally(facts.votes)} (risk {facts.risk:g})"
    if decision.action == "reject":
        what = (f"Reject cluster #{facts.pk} as not a lesion. {votes}. It leaves the ground truth; "
                "the decision is audited and can be changed later.")
    else:
        grade = decision.label or facts.label
        adjusted = " with the adjusted box" if decision.action == "box" else ""
        what = f"Decide {grade}{adjusted} for cluster #{facts.pk}. {votes}."
        n_atypical, leader = _majority(facts)
        overrides = ""
        if grade == NEGATIVE and n_atypical > facts.n_experts / 2:
            overrides = f" This overrides {n_atypical} of {facts.n_experts} experts who called it atypical."
        elif leader is not None and grade != leader:
            overrides = f" This overrides the majority, who called it {leader}."
        if not overrides and facts.status not in DECIDED:
            return None
        what += overrides
    if facts.status in DECIDED:
        what = f"Change the decision (now {_earlier(facts)}). " + what + " The earlier decision stays in the audit trail."
    return what


def token(facts: ClusterFacts, decision: Decision) -> str:
    """A digest of the decision and the state it was confirmed against."""
    box = ",".join(f"{v:.3f}" for v in decision.box) if decision.box else ""
    text = "|".join([str(facts.pk), facts.status, facts.label, ",".join(facts.votes), str(facts.n_experts),
                     facts.stamp, decision.action, decision.label, box])
    return hashlib.sha256(text.encode()).hexdigest()[:24]
