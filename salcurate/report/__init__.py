"""Stage 6, report: one static HTML page to review a store.

Takes everything in the store (scores, reference masks, selections, ground truth when present)
and gives a report folder (``build``: the ``report`` command) whose numbers come from pure
functions per section (``data``).
"""
