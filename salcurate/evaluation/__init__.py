"""Stage 5, evaluation: a trained SAL-Net model's segmentations, scored or written out.

Takes a SAL-Net model file (written by ``retrain``) and a store's split with ground truth, or
image files, and gives mIoU and per-class IoU in the paper's Table II layout (``evaluate``) or
VOC palette label maps (``predict``).  ``inference`` holds what both share: the model file,
multi-scale / flip probabilities fused by max, the dense CRF and the checks of their settings.
The metrics themselves are :mod:`salcurate.segmentation_metrics`.  Nothing is imported eagerly.
"""
