"""Closing the loop: alerts a pipeline raised, matched to the scenario runs that should (or should not)
have raised them, scored as verdicts, grouped into campaigns, reported as a scorecard and JUnit XML."""
