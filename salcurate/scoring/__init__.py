"""Mask scoring (SAL Section III-B): coarse scores from reference masks, fine scores from a network.

Modules: ``metrics`` (the formulas, pure functions), ``reference`` (reference masks H from
saliency maps), ``coarse`` (``score-coarse`` over a store).
"""
