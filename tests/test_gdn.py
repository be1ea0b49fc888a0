"""GDN (salcurate.nn.gdn): smoke, errors, shapes, hand computations, reparametrization, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call

from salcurate.errors import InputError
from salcurate.nn.gdn import GDN, PEDESTAL, gdn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _init_formula(x: torch.Tensor) -> torch.Tensor:
    """GDN at initialization (beta = 1, gamma = 0.1 I): y = x / sqrt(1 + 0.1 x^2)."""
    return x / torch.sqrt(1 + 0.1 * x**2)


# -- smoke ------------------------------------------------------------------------------


def test_smoke_parameters_and_repr() -> None:
    layer = GDN(5)
    names = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert names == {"beta_raw": (5,), "gamma_raw": (5, 5)}
    assert "5, beta_min=1e-06, gamma_init=0.1" in repr(layer)
    y = layer(torch.randn(2, 5, 3, 4))
    assert y.shape == (2, 5, 3, 4) and y.dtype == torch.float32


def test_initial_effective_parameters_are_exact() -> None:
    layer = GDN(4)
    assert torch.equal(layer.beta, torch.ones(4))
    gamma = layer.gamma.detach()
    off_diagonal = gamma[~torch.eye(4, dtype=torch.bool)]
    assert torch.equal(off_diagonal, torch.zeros(12))  # exactly 0, not just small
    torch.testing.assert_close(torch.diagonal(gamma), torch.full((4,), 0.1))


# -- hand computations ------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 1, 1), (4, 6)])
def test_init_matches_hand_formula(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = 4 * torch.randn(shape)
    y = GDN(shape[1])(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, _init_formula(x))


def test_init_hand_values() -> None:
    x = torch.tensor([[0.0, 1.0, -3.0, 10.0]])
    expected = torch.tensor([[0.0, 1 / math.sqrt(1.1), -3 / math.sqrt(1.9), 10 / math.sqrt(11.0)]])
    torch.testing.assert_close(GDN(4)(x), expected)


# Custom parameters, computed by hand for x = (1, 2, -2):
#   i=0: 1   + 0.1*1 + 0.2*4 + 0.0*4 = 1.9  -> y0 =  1 / sqrt(1.9)
#   i=1: 0.5 + 0.0*1 + 0.3*4 + 0.1*4 = 2.1  -> y1 =  2 / sqrt(2.1)
#   i=2: 2   + 0.5*1 + 0.0*4 + 0.0*4 = 2.5  -> y2 = -2 / sqrt(2.5)
BETA = torch.tensor([1.0, 0.5, 2.0])
GAMMA = torch.tensor([[0.1, 0.2, 0.0], [0.0, 0.3, 0.1], [0.5, 0.0, 0.0]])
X = torch.tensor([1.0, 2.0, -2.0])
Y = torch.tensor([1 / math.sqrt(1.9), 2 / math.sqrt(2.1), -2 / math.sqrt(2.5)])


def test_custom_parameters_vector_by_hand() -> None:
    layer = GDN(3)
    layer.set_parameters(BETA, GAMMA)
    torch.testing.assert_close(layer.beta, BETA)
    torch.testing.assert_close(layer.gamma, GAMMA)
    torch.testing.assert_close(layer(X[None]), Y[None])


def test_custom_parameters_feature_map_by_hand() -> None:
    # The same vector at pixel (0, 1) of a 2x2 map, zeros elsewhere; pixels do not interact.
    layer = GDN(3)
    layer.set_parameters(BETA, GAMMA)
    x = torch.zeros(1, 3, 2, 2)
    x[0, :, 0, 1] = X
    x[0, :, 1, 0] = 2 * X
    y = layer(x)
    torch.testing.assert_close(y[0, :, 0, 1], Y)
    torch.testing.assert_close(y[0, :, 0, 0], torch.zeros(3))
    d = BETA + GAMMA @ (2 * X) ** 2  # 4x the squares
    torch.testing.assert_close(y[0, :, 1, 0], 2 * X / torch.sqrt(d))


def test_feature_map_equals_per_pixel_loop() -> None:
    torch.manual_seed(1)
    c = 4
    beta = 0.5 + torch.rand(c, dtype=torch.float64)
    gamma = torch.rand(c, c, dtype=torch.float64)
    x = torch.randn(2, c, 3, 3, dtype=torch.float64)
    y = gdn(x, beta, gamma)
    for n in range(2):
        for h in range(3):
            for w in range(3):
                v = x[n, :, h, w]
                for i in range(c):
                    denom = beta[i] + sum(gamma[i, j] * v[j] ** 2 for j in range(c))
                    assert math.isclose(float(y[n, i, h, w]), float(v[i] / denom.sqrt()), rel_tol=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=3, max_size=3))
def test_init_keeps_sign_and_bounds(values: list[float]) -> None:
    x = torch.tensor([values], dtype=torch.float64)
    y = GDN(3).double()(x)
    assert torch.all(torch.sign(y) == torch.sign(x))
    assert torch.all(y.abs() <= x.abs() + 1e-12)  # beta = 1: never amplifies
    assert torch.all(y.abs() < math.sqrt(10))  # |x| / sqrt(1 + 0.1 x^2) < sqrt(10)


def test_state_dict_round_trip_and_double() -> None:
    a = GDN(3)
    a.set_parameters(BETA, GAMMA)
    b = GDN(3)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(X[None]), Y[None])
    y64 = b.double()(X[None].double())
    assert y64.dtype == torch.float64
    torch.testing.assert_close(y64, Y[None].double(), rtol=1e-6, atol=1e-7)


# -- non-negative reparametrization ------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_parameters_stay_non_negative_after_large_steps(optimizer: str) -> None:
    layer = GDN(3, beta_min=1e-6)
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(layer.parameters(), lr=10.0)
    else:
        opt = torch.optim.Adam(layer.parameters(), lr=10.0)
    for _ in range(3):
        opt.zero_grad()
        # Large gradients that push every beta and gamma down, far below zero.
        loss = 1e6 * (layer.beta.sum() + layer.gamma.sum())
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(layer.beta_raw.min()) < 0  # the raw parameters did go negative ...
        assert float(layer.beta.min()) >= layer.beta_min * (1 - 1e-6)  # ... the effective ones did not
        assert float(layer.gamma.min()) >= 0
        y = layer(torch.randn(2, 3, 4, 4))
    assert torch.isfinite(y).all()


def test_lower_bound_gradient_lets_parameters_leave_the_bound() -> None:
    layer = GDN(2)
    with torch.no_grad():
        layer.beta_raw.fill_(-5.0)  # far below the bound: beta = beta_min
        layer.gamma_raw.fill_(-5.0)
    assert torch.allclose(layer.beta, torch.full((2,), 1e-6))
    # A gradient that would push further down is dropped ...
    (layer.beta.sum() + layer.gamma.sum()).backward()
    assert torch.equal(layer.beta_raw.grad, torch.zeros(2))
    assert torch.equal(layer.gamma_raw.grad, torch.zeros(2, 2))
    # ... one that pushes up passes, so an optimizer step moves the value up again.
    layer.zero_grad()
    (-(layer.beta.sum() + layer.gamma.sum())).backward()
    assert torch.all(layer.beta_raw.grad < 0) and torch.all(layer.gamma_raw.grad < 0)


def test_reparametrization_formula() -> None:
    layer = GDN(2, beta_min=0.25)
    with torch.no_grad():
        layer.beta_raw.copy_(torch.tensor([2.0, 0.1]))  # 0.1 < sqrt(0.25 + pedestal)
        layer.gamma_raw.copy_(torch.tensor([[3.0, -1.0], [0.0, 0.5]]))
    torch.testing.assert_close(layer.beta, torch.tensor([4.0 - PEDESTAL, 0.25]))
    torch.testing.assert_close(layer.gamma, torch.tensor([[9.0, 0.0], [0.0, 0.25]]))


# -- gradients ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 2, 3), (3, 3)])
def test_gradcheck_input_at_init(shape: tuple[int, ...]) -> None:
    layer = GDN(3).double()
    x = (2 * torch.randn(shape, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(layer, (x,))


def test_gradcheck_input_and_raw_parameters() -> None:
    # Parameters strictly inside the feasible region (raw values away from the lower bound).
    layer = GDN(3).double()
    layer.set_parameters(BETA.double(), GAMMA.double() + 0.05)
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    beta_raw = layer.beta_raw.detach().clone().requires_grad_()
    gamma_raw = layer.gamma_raw.detach().clone().requires_grad_()

    def f(x: torch.Tensor, b: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return functional_call(layer, {"beta_raw": b, "gamma_raw": g}, (x,))

    assert torch.autograd.gradcheck(f, (x, beta_raw, gamma_raw))
    assert torch.autograd.gradgradcheck(f, (x, beta_raw, gamma_raw))


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "fragments"),
    [
        (torch.zeros(2, 3, 4), ["GDN(3) expects input of shape (N, 3, H, W) or (N, 3)", "got (2, 3, 4)"]),
        (torch.zeros(2, 4, 5, 5), ["got (2, 4, 5, 5)", "channel count"]),
        (torch.zeros(3), ["got (3,)"]),
        (torch.zeros(1, 3, 2, 2, dtype=torch.int64), ["floating-point", "torch.int64"]),
    ],
)
def test_bad_input_raises_clear_error(x: torch.Tensor, fragments: list[str]) -> None:
    with pytest.raises(InputError) as info:
        GDN(3)(x)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_non_tensor_input() -> None:
    with pytest.raises(InputError, match="expects a torch.Tensor, got list"):
        GDN(3)([[1.0, 2.0, 3.0]])


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"channels": 0}, "channels must be a positive integer, got 0"),
        ({"channels": 2.5}, "channels must be a positive integer"),
        ({"channels": 3, "beta_min": 0.0}, "beta_min must be a positive finite number"),
        ({"channels": 3, "beta_min": 2.0}, "beta_min must be at most 1"),
        ({"channels": 3, "gamma_init": -0.1}, "gamma_init must be a non-negative"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment.replace("(", r"\(")):
        GDN(**kwargs)


@pytest.mark.parametrize(
    ("beta", "gamma", "fragment"),
    [
        (torch.ones(2), torch.zeros(3, 3), "beta must have shape (3,), got (2,)"),
        (torch.ones(3), torch.zeros(3), "gamma must have shape (3, 3), got (3,)"),
        (torch.tensor([1.0, 0.0, 1.0]), torch.zeros(3, 3), "beta must be finite and >= beta_min"),
        (torch.ones(3), -torch.eye(3), "gamma must be finite and non-negative"),
    ],
)
def test_set_parameters_refuses_bad_values(beta: torch.Tensor, gamma: torch.Tensor, fragment: str) -> None:
    layer = GDN(3)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    with pytest.raises(InputError) as info:
        layer.set_parameters(beta, gamma)
    assert fragment in str(info.value)
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k])
