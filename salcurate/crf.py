"""The fully connected CRF both stages use: reference masks (two labels) and SAL-Net's output.

Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
Potentials", NIPS 2011, through their pydensecrf (the ``crf`` extra installs ``pydensecrf2``,
which provides ``import pydensecrf``): unary ψ_u = -log p with p clipped to [CRF_EPS, 1], Potts
pairwise terms with a Gaussian kernel exp(-|p_i - p_j|² / 2 sxy²) and a bilateral kernel
exp(-|p_i - p_j|² / 2 sxy² - |I_i - I_j|² / 2 srgb²), each times its compat, and mean-field
inference.
"""

from __future__ import annotations

import numpy as np

from salcurate.errors import InputError

#: Probabilities are clipped to [CRF_EPS, 1] before taking -log for the unary.
CRF_EPS = 1e-5
#: What to do when pydensecrf is missing (the callers add how to do without the CRF).  It does not
#: use the bare word crf, the name of the callers' on/off setting, which the CLI writes as a flag.
CRF_INSTALL = "install the CRF extra: pip install 'salcurate[crf]' (or pip install pydensecrf2)"


def crf_available() -> bool:
    """Whether pydensecrf (the ``crf`` extra, package pydensecrf2) can be imported."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def dense_crf(image: np.ndarray, probabilities: np.ndarray, *, iterations: int, gaussian_sxy: float,
              gaussian_compat: float, bilateral_sxy: float, bilateral_srgb: float, bilateral_compat: float,
              missing: str) -> np.ndarray:
    """Mean-field marginals of the dense CRF.

    image: ``(H, W, 3)`` uint8 RGB; probabilities: ``(K, H, W)`` float → ``(K, H, W)`` float32 Q.
    The callers check their inputs; ``missing`` is the message when pydensecrf is absent.
    """
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        raise InputError(missing) from None
    k, h, w = probabilities.shape
    unary = np.clip(probabilities.reshape(k, h * w), CRF_EPS, 1.0).astype(np.float32)
    np.log(unary, out=unary)
    np.negative(unary, out=unary)
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(np.ascontiguousarray(unary))
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    # pydensecrf takes a writable C-contiguous buffer (Pillow's and torchvision's arrays may be read-only)
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=np.require(image, np.uint8, ("C", "W")),
                             compat=bilateral_compat)
    return np.asarray(crf.inference(int(iterations)), dtype=np.float32).reshape(k, h, w)
