"""Stage 3, selection: which proxies to trust, and how well a score can be trusted.

Takes score columns from the store and gives named selections (``select``: w = 1 when the score
is at least tau, Eq. 9) and, on samples with ground truth, the agreement of a score with true
mask quality (``validation``: ``evaluate-scores``).
"""
