"""The SAL losses (salcurate.training.losses) against hand computations, and their gradients."""

from __future__ import annotations

import math

import pytest
import torch

from salcurate.errors import InputError
from salcurate.nn.salnet import SALNet, SALNetConfig
from salcurate.training.losses import attention_loss, sal_loss, selection_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _log_softmax(values: list[float], k: int) -> float:
    return values[k] - math.log(sum(math.exp(v) for v in values))


def test_selection_loss_by_hand() -> None:
    # B=2 images, K=2 classes, 1x2 pixels; image 0: labels (1, 255); image 1: labels (0, 1)
    logits = torch.tensor([[[[0.0, 3.0]], [[1.0, -2.0]]],
                           [[[2.0, 0.5]], [[0.0, 0.5]]]])
    labels = torch.tensor([[[1, 255]], [[0, 1]]])
    w = torch.tensor([1.0, 0.5])
    nll0 = -_log_softmax([0.0, 1.0], 1)
    nll1a, nll1b = -_log_softmax([2.0, 0.0], 0), -_log_softmax([0.5, 0.5], 1)
    expected = (1.0 * nll0 + 0.5 * (nll1a + nll1b)) / (1.0 * 1 + 0.5 * 2)  # weighted mean over valid pixels
    assert selection_loss(logits, labels, w).item() == pytest.approx(expected, rel=1e-6)


def test_selection_loss_ignores_255_and_zero_weights() -> None:
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    only_first = selection_loss(logits[:1], labels[:1], torch.ones(1))
    assert selection_loss(logits, labels, torch.tensor([1.0, 0.0])).item() == pytest.approx(only_first.item(), rel=1e-6)
    everything_ignored = torch.full((2, 4, 4), 255)
    assert selection_loss(logits, everything_ignored, torch.ones(2)).item() == 0.0
    assert selection_loss(logits, labels, torch.zeros(2)).item() == 0.0


def test_zero_weight_image_gets_no_gradient() -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = torch.randint(0, 3, (2, 4, 4))
    selection_loss(logits, labels, torch.tensor([1.0, 0.0])).backward()
    assert logits.grad[0].abs().sum() > 0
    assert torch.count_nonzero(logits.grad[1]) == 0


def test_zero_weight_image_does_not_train_the_segmentation_head() -> None:
    torch.manual_seed(0)
    model = SALNet(SALNetConfig(backbone="resnet18", num_classes=2, attention="off")).eval()  # eval: no BN coupling
    x = torch.randn(2, 3, 32, 32)
    labels = torch.randint(0, 3, (2, 4, 4))

    def head_grads(inputs: torch.Tensor, lab: torch.Tensor, w: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad()
        selection_loss(model(inputs).attended, lab, w).backward()
        return [p.grad.clone() for p in model.aspp.parameters()]

    with_zero = head_grads(x, labels, torch.tensor([1.0, 0.0]))
    alone = head_grads(x[:1], labels[:1], torch.ones(1))
    for a, b in zip(with_zero, alone):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)  # batched convs sum in another order


def test_losses_gradcheck() -> None:
    logits = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[[0, 1], [2, 255]], [[1, 1], [0, 2]]])
    w = torch.tensor([1.0, 0.3], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: selection_loss(t, labels, w), (logits,))
    cls = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    tags = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    for form in ("bce", "positive"):
        assert torch.autograd.gradcheck(lambda t: attention_loss(t, tags, form=form), (cls,))


def test_selection_loss_shape_error() -> None:
    with pytest.raises(InputError, match=r"expects attended \(B, K, H, W\), labels \(B, H, W\) and weights \(B,\)"):
        selection_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long), torch.ones(2))


def test_attention_loss_by_hand() -> None:
    z = torch.tensor([[2.0, -1.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    terms = [-math.log(sig(2.0)), -math.log(1 - sig(-1.0)), -math.log(1 - sig(0.0)), -math.log(sig(1.0))]
    assert attention_loss(z, y).item() == pytest.approx(sum(terms) / 4, rel=1e-6)
    positive = [-math.log(sig(2.0)), 0.0, 0.0, -math.log(sig(1.0))]
    assert attention_loss(z, y, form="positive").item() == pytest.approx(sum(positive) / 4, rel=1e-6)
    # the mask leaves images out of the average
    assert attention_loss(z, y, mask=torch.tensor([True, False])).item() == pytest.approx(sum(terms[:2]) / 2, rel=1e-6)


def test_attention_loss_errors() -> None:
    with pytest.raises(InputError, match="attention_loss must be one of bce, positive"):
        attention_loss(torch.zeros(1, 2), torch.zeros(1, 2), form="focal")
    with pytest.raises(InputError, match=r"same \(B, C\) shape"):
        attention_loss(torch.zeros(1, 2), torch.zeros(1, 3))


def test_sal_loss_is_l_sel_plus_lambda_l_atten() -> None:
    logits, labels = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    cls, tags, w = torch.randn(2, 2), torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.ones(2)
    total, sel, att = sal_loss(logits, cls, labels, w, tags, lam=2.0)
    assert total.item() == pytest.approx(sel.item() + 2.0 * att.item(), rel=1e-6)
    assert sel.item() == pytest.approx(selection_loss(logits, labels, w).item())
    assert att.item() == pytest.approx(attention_loss(cls, tags).item())
    total, _, att = sal_loss(logits, None, labels, w, tags, lam=2.0)  # attention off: no branch
    assert att.item() == 0.0 and total.item() == pytest.approx(sel.item())
