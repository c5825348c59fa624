"""Layer targets: known-bad layers are caught by their property; correct layers pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _support import not_holding, run, tf32_rounded

from xattn_ref._devices import ALL_DTYPES
from xattn_ref.kinds import KINDS
from xattn_ref.plan import select_properties
from xattn_ref.zoo.adapters import cross_attention_layer, decoder_layer, multihead_attention_layer
from xattn_ref.zoo.known_bad import KNOWN_BAD_LAYERS, LAYER_CAUGHT_BY

LAYER_PROPERTIES = select_properties(KINDS["layer"], None, None)  # the default set (no opt-in)


def verdicts(name, module, props, max_examples=20):
    return {
        (p, d): run(p, module, d, kind="layer", name=name, max_examples=max_examples, dim=16)
        for p in props
        for d in ALL_DTYPES
    }


def test_every_layer_property_but_device_consistency_has_a_known_bad_layer():
    assert set(LAYER_PROPERTIES) - set(LAYER_CAUGHT_BY.values()) == {"finite_grad", "device_consistency"}


@pytest.mark.parametrize("name", list(KNOWN_BAD_LAYERS))
def test_each_known_bad_layer_is_caught_by_its_property(name):
    prop = LAYER_CAUGHT_BY[name]
    results = verdicts(name, KNOWN_BAD_LAYERS[name](), [prop])
    assert any(r.status == "failed" for r in results.values()), {k: r.message for k, r in results.items()}


def test_multihead_attention_as_most_code_calls_it_is_flagged_by_finite_output_and_grad():
    results = verdicts("mha", multihead_attention_layer(16, 2), ["finite_output", "finite_grad"])
    assert {r.status for r in results.values()} == {"failed"}


@pytest.mark.parametrize(
    "factory",
    [
        lambda: multihead_attention_layer(16, 2, need_weights=False),
        lambda: cross_attention_layer(dim=16),
    ],
    ids=["mha-need_weights-False", "cross_attention-safe_sdpa"],
)
def test_correct_layers_pass_every_layer_property(factory):
    assert not not_holding(verdicts("good", factory(), list(LAYER_PROPERTIES), max_examples=10).values())


def test_decoder_layer_runs_as_a_layer_target():
    results = verdicts("decoder", decoder_layer(16, 2), ["no_input_mutation", "batch_independence"])
    assert not not_holding(results.values())


def _one_real_token_case(dtype):
    """B=1: x (1, 3, 16), a context of 5 tokens of which only the first is real. The softmax over
    one allowed key is constant, so dx cancels to zero exactly (dS = dP - dP), and a computation in
    dtype leaves only its roundings there."""
    from xattn_ref.cases import LayerCaseSpec, MaskSpec, SlicePattern

    mask = MaskSpec("key_padding", (SlicePattern("one_key", 0),))
    return LayerCaseSpec(1, 3, 5, 16, 16, dtype, "cpu", 0, (1.0,), (1.0,), mask).build()


def test_a_layer_gradient_that_cancels_to_zero_is_judged_by_the_roundings_of_its_parts(monkeypatch):
    # The model's Monte Carlo term (every operation perturbed by its rounding): without it the
    # budget of dx is the size of the float64 dx, about 1e-17 here, and a correct float32 layer
    # (SDPA's flash kernel computes dP and its row average apart) fails; with it, it passes.
    import contextlib
    import types

    import xattn_ref.tolerance.layer
    from xattn_ref._calls import cotangent, forward_backward
    from xattn_ref.targets import as_target

    call = as_target(multihead_attention_layer(16, 2, need_weights=False), kind="layer", dim=16).call
    case = _one_real_token_case(torch.float32)
    g = cotangent(case, (1, 3, 16))
    _, grads = forward_backward(call, case, g)
    budget = call.budget(case, g, grads=True)
    error = (grads["dx"].double() - budget.truth["dx"]).abs().max()
    assert float(budget.truth["dx"].abs().max()) < 1e-15 < float(error)
    assert budget.compare("dx", grads["dx"]).ok
    no_perturbation = contextlib.nullcontext(types.SimpleNamespace(kinks=set()))
    monkeypatch.setattr(xattn_ref.tolerance.layer, "perturbed", lambda *a, **k: no_perturbation)
    assert not call.budget(case, g, grads=True).compare("dx", grads["dx"]).ok


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_wrong_gradient_on_the_half_precision_path_alone_is_caught_on_a_gradient(dtype):
    from xattn_ref.zoo.known_bad import half_path_wrong_grad_layer

    layer = half_path_wrong_grad_layer()
    failed = run("dtype_consistency", layer, dtype, kind="layer", dim=16, max_examples=20)
    assert failed.status == "failed" and failed.message.startswith(("dcontext[", "d(")), failed.message
    # its output is right: judged on y alone (forward-only), it passes; and float32 has no defect
    forward = run("dtype_consistency", layer, dtype, kind="layer", dim=16, forward_only=True, max_examples=20)
    assert forward.status == "passed", forward.message
    float32 = run("dtype_consistency", layer, torch.float32, kind="layer", dim=16, max_examples=20)
    assert float32.status == "passed", float32.message


def test_a_relu_written_as_a_comparison_is_seen_as_a_kink():
    from xattn_ref._perturbed import perturbed

    h = torch.randn(8, dtype=torch.float64)
    with perturbed(1e-3, seed=0) as mode:
        torch.where(h > 0, h, 0.0)
    assert mode.kinks == {"gt"}
    with perturbed(1e-3, seed=0) as mode:
        torch.tensor([1.0, 0.0], dtype=torch.float64).softmax(-1)
        (torch.tensor([1, 0]) > 0).any()  # a decision on integers reads no rounded value
    assert not mode.kinks


def _tf32(t):
    """float32 rounded to TF32 (:func:`tf32_rounded`); the gradient passes straight through."""
    if not isinstance(t, torch.Tensor) or t.dtype != torch.float32:
        return t
    return t + (tf32_rounded(t.detach()) - t.detach())


class _TF32Products(torch.overrides.TorchFunctionMode):
    """Matrix products read their float32 inputs rounded to TF32, as on a CUDA device whose float32
    matmul precision is below "highest"."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        products = (F.linear, torch.matmul, torch.Tensor.__matmul__, F.scaled_dot_product_attention)
        if func in products:
            args = tuple(_tf32(a) for a in args)
        return func(*args, **(kwargs or {}))


class _TF32Layer(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, *args):
        with _TF32Products():
            return self.inner(*args)


def test_float32_layer_budgets_use_tf32_rounding_where_matmuls_run_in_tf32():
    # The header says float32 budgets use TF32's rounding on such a device: for layers too. A
    # correct layer whose products read TF32 inputs (simulated here on the CPU) is within the TF32
    # budget, output and gradients, and off the float32 one.
    from xattn_ref._calls import cotangent, forward_backward
    from xattn_ref.cases import LayerCaseSpec, MaskSpec, SlicePattern
    from xattn_ref.targets import as_target
    from xattn_ref.tolerance import layer_budget

    call = as_target(_TF32Layer(cross_attention_layer(dim=16)), kind="layer", dim=16).call
    mask = MaskSpec("key_padding", (SlicePattern("right_padding", 4), SlicePattern("right_padding", 6)))
    case = LayerCaseSpec(2, 4, 6, 16, 16, torch.float32, "cpu", 0, (1.0, 1.0), (1.0, 1.0), mask).build()
    g = cotangent(case, (2, 4, 16))
    y, grads = forward_backward(call, case, g)
    results = {"y": y, **grads}
    tf32 = layer_budget(call, case, 16 + 16 + 6, g, grads=True, tf32=True)
    for name, value in results.items():
        c = tf32.compare(name, value)
        assert c.ok, c.explain()
    full = layer_budget(call, case, 16 + 16 + 6, g, grads=True, tf32=False)
    assert not full.compare("y", y).ok


class _ReLUWithLeakyBackward(torch.autograd.Function):
    """ReLU forward; below float64 (a fused fast path, say), a leaky ReLU's backward (slope
    0.01): the backward of another activation, on one path only, as layers are judged against
    their own float64 run."""

    @staticmethod
    def forward(ctx, h):
        ctx.save_for_backward(h)
        return h.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (h,) = ctx.saved_tensors
        return torch.where(h > 0, grad, 0.0 if h.dtype == torch.float64 else 0.01 * grad)


def test_a_relu_layer_far_from_its_kinks_has_its_gradients_judged_in_full(monkeypatch):
    # A float32 decoder layer's ReLU units are far from their kink (no rounding takes one across),
    # so its gradients are judged by the Monte Carlo term, not waved through with their own size:
    # a backward 1% off for the units that are off is caught. Counted as near a kink (the
    # allowance every ReLU layer had before), it passes.
    import xattn_ref.tolerance.layer

    layer = decoder_layer(16, 2)
    layer.layer.activation = _ReLUWithLeakyBackward.apply
    failed = run("dtype_consistency", layer, torch.float32, kind="layer", dim=16, max_examples=10)
    assert failed.status == "failed" and failed.message.startswith(("dx[", "dcontext[", "d(")), failed.message
    monkeypatch.setattr(xattn_ref.tolerance.layer, "near_kink", lambda *a: True)
    waved = run("dtype_consistency", layer, torch.float32, kind="layer", dim=16, max_examples=10)
    assert waved.status == "passed", waved.message


def test_a_value_near_a_kink_is_told_from_one_far_from_it():
    from xattn_ref._perturbed import near_kink, perturbed

    def decisions(h, eps, seed=0):
        with perturbed(eps, seed=seed) as mode:
            torch.relu(h * 1.0)
        return mode.decisions

    far = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    near = torch.tensor([1.0, -1e-9, 2.0], dtype=torch.float64)
    for h, expected in ((far, False), (near, True)):
        exact = decisions(h, 0.0)
        samples = [decisions(h, 1e-6, seed) for seed in range(3)]
        assert near_kink(exact, samples, 1e-6) is expected
    # decisions that do not match one to one (another path) count as near
    assert near_kink(decisions(far, 0.0), [[]], 1e-6)
