"""Which review decisions ask first (annotation.review_decisions: pure, no database)."""

from annotation.review_decisions import ClusterFacts, Decision, confirmation, token


def facts(votes, *, n_experts=3, status="disputed", label="HSIL", stamp=""):
    return ClusterFacts(pk=7, status=status, label=label, votes=tuple(votes), n_experts=n_experts, risk=12.0,
                        decided_by="rita" if stamp else "", decided_at="3 Dec 2026, 06:56 UTC" if stamp else "",
                        stamp=stamp)


def test_a_rejection_always_asks_and_names_the_votes_and_risk():
    text = confirmation(facts(["HSIL", "SCC", "SCC"]), Decision("reject"))
    assert text.startswith("Reject cluster #7 as not a lesion. 3 of 3 experts drew it: HSIL, SCC ×2 (risk 12).")


def test_a_grade_against_an_atypical_majority_asks_and_one_within_it_does_not():
    split = facts(["HSIL", "SCC", "NILM"])
    assert "overrides 2 of 3 experts who called it atypical" in confirmation(split, Decision("label", "NILM"))
    assert confirmation(split, Decision("label", "HSIL")) is None  # no grade holds a majority
    majority = facts(["SCC", "SCC", "NILM"], label="SCC")
    assert "overrides the majority, who called it SCC" in confirmation(majority, Decision("label", "HSIL"))
    assert confirmation(majority, Decision("label", "SCC")) is None


def test_experts_who_drew_nothing_keep_an_atypical_minority_a_minority():
    assert confirmation(facts(["HSIL"], n_experts=3), Decision("label", "NILM")) is None


def test_changing_a_decision_always_asks_and_states_the_earlier_one():
    decided = facts(["HSIL", "LSIL"], status="resolved", stamp="2026-12-03T06:56:00+00:00")
    text = confirmation(decided, Decision("label", "LSIL"))
    assert text.startswith("Change the decision (now resolved as HSIL by rita on 3 Dec 2026, 06:56 UTC).")
    assert text.endswith("The earlier decision stays in the audit trail.")


def test_the_token_changes_with_the_decision_and_with_the_state_it_was_shown_for():
    base = facts(["HSIL", "SCC", "NILM"])
    assert token(base, Decision("label", "NILM")) == token(facts(["HSIL", "SCC", "NILM"]), Decision("label", "NILM"))
    assert token(base, Decision("label", "NILM")) != token(base, Decision("reject"))
    later = facts(["HSIL", "SCC", "NILM"], status="resolved", stamp="2026-12-03T06:56:00+00:00")
    assert token(base, Decision("reject")) != token(later, Decision("reject"))
