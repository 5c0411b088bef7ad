"""The access rule's corners (annotation.access), on plain facts: no database. The rule walked over
every page and endpoint is tests/annotation/test_visibility.py."""

import pytest

from annotation.access import _decide, _Facts
from cytoloop.roles import Role


def _facts(**kw):
    base = dict(consensus=False, preannotation_model="", votes=0, needed=2, held=False, held_extra=False,
                voted=False, closed=False)
    return _Facts(**{**base, **kw})


@pytest.mark.parametrize(("roles", "facts", "pending", "sees_truth"), [
    # a released image (the holder went quiet) may come back: still a pending vote
    ({"pathologist"}, _facts(votes=1), True, False),
    # skipped: no vote pending, but never voted, so still blind after consensus
    ({"pathologist"}, _facts(closed=True, consensus=True, votes=2), False, False),
    # a reviewer who is also a pathologist: the pending vote comes first
    ({"reviewer", "pathologist"}, _facts(), True, False),
    ({"admin", "pathologist"}, _facts(held=True, consensus=True, votes=2, needed=3), True, False),
    ({"reviewer", "pathologist"}, _facts(consensus=True, votes=2), False, True),
    # voted, consensus not yet: not pending, still blind
    ({"pathologist"}, _facts(voted=True, closed=True, votes=1), False, False),
])
def test_access_rule_corners(roles, facts, pending, sees_truth):
    view = _decide(frozenset(Role(r) for r in roles), facts, show_all_predictions=False)
    assert view.may_open and view.own_boxes
    assert view.pending_vote is pending
    assert view.ground_truth is view.others_boxes is view.consensus is sees_truth


def test_access_rule_offers_every_model_box_to_a_pending_vote_only_with_the_setting():
    pathologist = frozenset({Role.PATHOLOGIST})
    assert not _decide(pathologist, _facts(), show_all_predictions=False).predictions
    shown = _decide(pathologist, _facts(), show_all_predictions=True)
    assert shown.predictions and shown.preannotations and shown.prediction_model == ""
    assert not _decide(pathologist, _facts(held=True, held_extra=True), show_all_predictions=True).predictions
    assert not _decide(frozenset(), _facts(), show_all_predictions=True).may_open
