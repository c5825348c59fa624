"""The public strategies: shapes, the mask convention, empty rows, shrinking, validation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, find, given, settings
from hypothesis.errors import InvalidArgument

from xattn_ref.cases import MASK_LAYOUTS, AttentionCase
from xattn_ref.strategies import HALF_SHIFT_CAP, attention_cases, layer_cases, masks

SHAPES = {"key_padding": (2, 1, 1, 5), "query_key": (2, 1, 3, 5), "full": (2, 2, 3, 5), "shared": (3, 5)}


@pytest.mark.parametrize("layout", MASK_LAYOUTS)
def test_masks_have_the_layouts_shape(layout):
    @settings(max_examples=20, database=None)
    @given(masks(batch_size=2, num_heads=2, q_len=3, kv_len=5, layouts=[layout]))
    def check(mask):
        assert mask.dtype == torch.bool and tuple(mask.shape) == SHAPES[layout]

    check()


def test_cases_are_consistent_and_rebuild_from_their_spec():
    @settings(max_examples=50, database=None)
    @given(attention_cases())
    def check(case):
        b, h, lq, d = case.q.shape
        assert case.k.shape[:2] == (b, h) and case.k.shape[-1] == d and case.v.shape[2] == case.k.shape[2]
        assert case.q.dtype == case.spec.dtype
        if case.mask is not None:
            assert torch.broadcast_shapes(case.mask.shape, (b, h, lq, case.k.shape[2])) == (
                b,
                h,
                lq,
                case.k.shape[2],
            )
        namespace: dict = {}
        exec(case.snippet(), namespace)
        assert all(
            torch.equal(a, b)
            for a, b in zip((case.q, case.k, case.v), (namespace["q"], namespace["k"], namespace["v"]))
        )

    check()


def test_empty_rows_are_common_by_default():
    seen = {"cases": 0, "empty": 0, "long": 0, "lq1": 0, "lk1": 0, "none": 0, "big": 0}

    @settings(max_examples=400, database=None, suppress_health_check=list(HealthCheck))
    @given(attention_cases())
    def count(case):
        seen["cases"] += 1
        seen["empty"] += bool(case.empty_rows.any())
        seen["long"] += case.k.shape[2] > 32
        seen["lq1"] += case.q.shape[2] == 1
        seen["lk1"] += case.k.shape[2] == 1
        seen["none"] += case.mask is None
        logits = torch.einsum("bhid,bhjd->bhij", case.q.double(), case.k.double()) / case.q.shape[-1] ** 0.5
        seen["big"] += bool(logits.abs().max() > 50)

    count()
    assert seen["empty"] >= seen["cases"] / 5, seen
    for key in ("long", "lq1", "lk1", "none", "big"):
        assert seen[key] > 0, (key, seen)


def test_shrinking_leads_to_a_fully_padded_context():
    case = find(
        attention_cases(),
        lambda c: bool(c.empty_rows.any()),
        settings=settings(database=None, max_examples=200),
    )
    assert (
        case.describe()
        == "B=1 H=1 Lq=1 Lk=1 D=8 Dv=8 float64 cpu; mask key_padding (B, 1, 1, Lk): b0 all_false"
    )


def test_defaults_draw_all_four_dtypes():
    seen = set()

    @settings(max_examples=100, database=None)
    @given(attention_cases(max_kv_len=4))
    def collect(case):
        seen.add(case.dtype)

    collect()
    assert seen == {torch.float64, torch.float32, torch.float16, torch.bfloat16}


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        (lambda: masks(kv_len=0), "kv_len must be at least 1, but was 0"),
        (lambda: masks(layouts=["diagonal"]), "layouts contains 'diagonal'"),
        (lambda: masks(patterns=[]), "patterns must not be empty"),
        (lambda: attention_cases(dtypes=[torch.int32]), "dtypes contains torch.int32"),
        (lambda: attention_cases(min_q_len=5, max_q_len=2), "min_q_len=5 must be at most max_q_len=2"),
        (lambda: attention_cases(devices="cpu"), "devices must be a non-empty sequence of str"),
        (lambda: attention_cases(logit_stds=[0.0]), "logit_stds must hold positive finite numbers"),
        (lambda: attention_cases(head_dims=[2.5]), "head_dims must be an int, but was 2.5"),
        (lambda: attention_cases(logit_shifts=[float("nan")]), "logit_shifts must hold finite numbers"),
        (lambda: attention_cases(value_means=[]), "value_means must be a non-empty sequence of numbers"),
        (lambda: attention_cases(head_scales=[-1.0]), "head_scales must hold positive finite numbers"),
        (lambda: attention_cases(tile_lengths=[0]), "tile_lengths must be at least 1, but was 0"),
        (lambda: attention_cases(tile_lengths="64"), "tile_lengths must be a sequence of int"),
    ],
)
def test_bad_arguments_raise_invalid_argument_naming_them(strategy, message):
    s = strategy()  # no error yet: arguments are checked when the test runs

    @given(s)
    def use(x):
        pass

    with pytest.raises(
        InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        use()


def test_from_type_draws_attention_cases():
    from hypothesis import strategies as st

    @settings(max_examples=5, database=None)
    @given(st.from_type(AttentionCase))
    def check(case):
        assert isinstance(case, AttentionCase)

    check()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dim": 0}, "dim must be at least 1, but was 0"),
        ({"dim": 8, "stds": [0.0]}, "stds must hold positive finite numbers"),
        ({"dim": 8, "devices": "cpu"}, "devices must be a non-empty sequence of str"),
    ],
)
def test_layer_case_arguments_are_validated_with_invalid_argument(kwargs, message):
    @settings(max_examples=1, database=None)
    @given(layer_cases(**kwargs))
    def check(case):
        pass

    with pytest.raises(InvalidArgument, match=message):
        check()


def test_logit_shifts_make_rows_whose_allowed_logits_are_all_far_from_zero():
    seen = {"below": 0, "above": 0}

    @settings(max_examples=200, database=None, suppress_health_check=list(HealthCheck))
    @given(attention_cases(dtypes=[torch.float64]))
    def count(case):
        s = (case.q @ case.k.transpose(-2, -1)) * case.q.shape[-1] ** -0.5
        allowed = case.full_mask
        rows = allowed.any(-1)
        below = (torch.where(allowed, s, -torch.inf).amax(-1) < -16) & rows
        above = (torch.where(allowed, s, torch.inf).amin(-1) > 16) & rows
        seen["below"] += bool(below.any())
        seen["above"] += bool(above.any())

    count()
    assert seen["below"] >= 20 and seen["above"] >= 10, seen


def test_defaults_draw_tile_lengths_values_far_from_zero_mean_and_unlike_heads():
    """The inputs that show a half-precision accumulator (long rows, values far from zero mean),
    tile-boundary bugs (keys and queries) and heads of unlike scales are drawn by default, and
    each can be turned off."""
    seen = {"tile_kv": 0, "tile_q": 0, "mean": 0, "heads": 0}
    tiles = {63, 64, 65, 127, 128, 129, 255, 256, 257}

    @settings(max_examples=300, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(attention_cases(dtypes=[torch.float64]))
    def count(case):
        seen["tile_kv"] += case.k.shape[2] in tiles
        seen["tile_q"] += case.q.shape[2] in tiles
        seen["mean"] += any(m != 0 for m in case.spec.value_mean)
        seen["heads"] += len(set(case.spec.head_scale)) > 1

    count()
    # measured: 100, 24, 161, 58 in 300 derandomized draws (heads differ only when H = 2)
    assert seen["tile_kv"] >= 50 and seen["tile_q"] >= 5 and seen["mean"] >= 50 and seen["heads"] >= 10, seen

    off = {"tile_kv": 0}

    @settings(max_examples=300, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(attention_cases(dtypes=[torch.float64], tile_lengths=[], value_means=[0.0], head_scales=[1.0]))
    def none(case):
        off["tile_kv"] += case.k.shape[2] in tiles  # only by chance, anywhere in 1..257
        assert not any(case.spec.value_mean) and set(case.spec.head_scale) <= {1.0}

    none()
    assert off["tile_kv"] < seen["tile_kv"] / 3, (off, seen)


def test_value_means_keep_the_root_mean_square():
    from xattn_ref.cases import CaseSpec

    spec = CaseSpec(
        batch_size=1,
        num_heads=1,
        q_len=2,
        kv_len=4096,
        head_dim=8,
        value_dim=8,
        dtype=torch.float64,
        device="cpu",
        seed=0,
        logit_std=(1.0,),
        value_std=(3.0,),
        mask=None,
        value_mean=(8.0,),
    )
    v = spec.build().v
    assert abs(v.pow(2).mean().sqrt().item() - 3.0) < 0.1
    assert abs(v.mean().item() / v.std().item() - 8.0) < 0.5


def test_large_shifts_are_drawn_in_float32_and_float64_and_capped_in_half_precision():
    """Logits under a -1e4 sentinel in float32 and float64; in float16 and bfloat16 the shift is
    capped at HALF_SHIFT_CAP (a bfloat16 logit of -20000 rounds by up to 64: nothing to judge)."""
    seen: dict[torch.dtype, set[float]] = {}

    @settings(max_examples=60, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(attention_cases(logit_shifts=[-20000.0, 1000.0]))
    def draw(case):
        seen.setdefault(case.dtype, set()).update(case.spec.logit_shift)

    draw()
    assert seen[torch.float32] == seen[torch.float64] == {-20000.0, 1000.0}, seen
    assert seen[torch.float16] == seen[torch.bfloat16] == {-HALF_SHIFT_CAP, HALF_SHIFT_CAP}, seen
