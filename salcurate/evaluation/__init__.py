"""Evaluation of a segmentation model (SAL-Net) against ground truth, and prediction with it.

``metrics``: confusion matrix, IoU, mIoU, pixel accuracy and the paper's class order (pure
numpy).  ``inference``: multi-scale / flip probabilities and the dense CRF.  ``evaluate``: the
``evaluate`` and ``predict`` commands' library functions.  Nothing is imported eagerly.
"""
