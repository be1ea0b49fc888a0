"""Stage 2, scoring: how good each proxy mask looks, without ground truth (SAL Section III-B).

Takes images, proxy masks, saliency maps and tags from the store and gives score columns:
``coarse`` (``score-coarse``: reference masks H from saliency maps by ``reference``, AC, F, CD and
SC, Eq. 3-5) and ``fine`` (``score-fine``: P from the scorer network and SF, Eq. 6-7).  The formulas
are pure functions in ``metrics``; ``synthesis`` makes the scorer's training set.
"""
