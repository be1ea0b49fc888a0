"""The SAL paper's constants, in one place (Zhou, Gong, Liu, Fu, IEEE TMM; NOTES.md).

Every default that comes from the paper is named here and cited; modules import it from here,
so that a value the paper fixes is written once.
"""

from __future__ import annotations

#: Table IV: the taus whose NoS row (number of masks kept) the paper reports.
TABLE_IV_TAUS: tuple[float, ...] = (0.0, 0.35, 0.55, 0.7, 0.8, 0.85)

#: The paper's best tau per score and backbone (Section IV-B): SC 0.55 (VGG16), 0.8 (ResNet101);
#: SF 0.55 (VGG16), 0.85 (ResNet101).
BEST_TAUS: dict[str, tuple[float, float]] = {"sc": (0.55, 0.8), "sf": (0.55, 0.85)}

#: Eq. 3: the objectness exponent b in AC = F1(H, B) x F(B)^b.
OBJECTNESS_B: float = 0.1

#: Eq. 14: the weight of the attention loss (Table VIII: 1-5 all work).
LAMBDA: float = 2.0

#: Section IV-A: base learning rate and iterations per backbone.  The paper gives VGG16 and
#: ResNet101; ResNet18/50 take ResNet101's.
PROTOCOLS: dict[str, dict[str, float]] = {
    "vgg16": {"lr": 1e-3, "max_iter": 27000},
    "resnet101": {"lr": 1e-4, "max_iter": 15000},
    "resnet50": {"lr": 1e-4, "max_iter": 15000},
    "resnet18": {"lr": 1e-4, "max_iter": 15000},
}

#: Section IV-A: SAL-Net's SGD recipe (batch 7, 321 x 321 crops, scale 0.5-1.5, poly 0.9, heads 10x).
SALNET_BATCH: int = 7
SALNET_CROP: int = 321

#: Section III-B2 / Table I: the fine scorer's input side, batch, learning rate and epochs.
SCORER_INPUT: int = 256
SCORER_BATCH: int = 8
SCORER_LR: float = 1e-5
SCORER_EPOCHS: int = 50

#: Inference (DeepLab-v2, as the paper): scales fused by max, dense-CRF parameters.
INFERENCE_SCALES: tuple[float, ...] = (0.5, 0.75, 1.0)
