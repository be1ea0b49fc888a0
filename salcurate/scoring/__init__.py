"""Stage 2, scoring: how good each proxy mask looks, without ground truth (SAL Section III-B).

Takes images, proxy masks, saliency maps and tags from the store and gives score columns:
``coarse`` (``score-coarse``: reference masks H from saliency maps by ``reference``, AC, F, CD and
SC, Eq. 3-5), ``fine`` (``score-fine``: P from the scorer network and SF, Eq. 6-7), ``evidence``
(``score-evidence``: how the tag classifier's CAMs back each class region, CE, and the saliency
map's contrast) and ``combined`` (``score-combined``: the default score q of ``select``, a weighted
geometric mean of other columns).  The formulas are pure functions in ``metrics``,
``evidence_math``, ``agreement`` and ``combined``; ``synthesis`` makes the scorer's training set.
The model-agreement columns need trained models and come from ``salcurate.training.folds``.
"""
