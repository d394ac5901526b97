import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dgn_engine.exporter.generator import Decoder
from dgn_engine.kernels.generator import frozen_generator, generator_forward, stacked_generator
from dgn_engine.kernels.layers import conv2d, upsample2x
from dgn_engine.plan import GeneratorPlan, generator_plan
from dgn_engine.rng import init_generator
from dgn_engine.targets import parse_target


def test_paper_untrained_generator_has_exactly_5240841_values():
    plan = generator_plan("untrained")
    assert plan.trainable_count() == 5_240_841
    assert plan.features == 3200 and (plan.feature_channels, plan.feature_size) == (128, 5)
    # the sizes DESIGN.md tabulates: 9, 16, 30, 58, 113, then 224
    sizes = plan.spatial_sizes()
    assert [sizes[i] for i in (1, 4, 7, 10, 13)] == [9, 16, 30, 58, 113] and sizes[-1] == 224
    widths = [c.cout for c in plan.convs()]
    assert widths == [512, 512, 256, 256, 256, 256, 128, 128, 128, 128, 3]
    kernels = [c.k for c in plan.convs()]
    assert kernels == [2, 2, 3, 3, 3, 3, 3, 3, 4, 4, 3]


def test_paper_decoder_head():
    plan = generator_plan("decoder")
    head = plan.convs()[-3:]
    assert [(c.cout, c.k, c.same, c.relu, c.bn) for c in head] == [
        (64, 3, False, True, True),
        (64, 3, True, True, True),
        (3, 3, True, False, True),
    ]
    assert not plan.has_alpha and plan.features == 3200


@pytest.mark.parametrize("kind", ["untrained", "decoder"])
def test_full_size_forward_shape(kind):
    plan = generator_plan(kind)
    params = {k: torch.from_numpy(v) for k, v in init_generator(plan, 0, parse_target("class:1")).items()}
    feature = torch.ones(1, plan.features)
    if kind == "untrained":
        params = {k: v[None] for k, v in params.items()}
        image = generator_forward(plan, feature, *stacked_generator(plan, params), groups=1)
    else:
        image = Decoder(plan).eval()(feature)
    assert image.shape == (1, 3, 224, 224)


@pytest.mark.parametrize("size, channels", [(28, 1), (32, 3), (64, 1), (64, 3), (96, 3)])
def test_scaled_variants(size, channels):
    for kind in ("untrained", "decoder"):
        plan = generator_plan(kind, size, channels, size / 224)
        assert plan.spatial_sizes()[-1] == size
        assert GeneratorPlan.from_json(plan.to_json()) == plan
        out = Decoder(plan).eval()(torch.ones(2, plan.features)) if kind == "decoder" else None
        if out is not None:
            assert out.shape == (2, channels, size, size)


def test_upsample_is_nearest():
    x = torch.randn(2, 3, 4, 5)
    np.testing.assert_array_equal(upsample2x(x).numpy(), F.interpolate(x, scale_factor=2, mode="nearest").numpy())


def _tensorflow_same_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """TensorFlow's 'same' convolution written out as its definition: output pixel (i, j) sums
    w[o, c, di, dj] * x[c, i + di - before, j + dj - before] over the taps inside the image, where
    before = (k - 1) // 2 (the odd padding pixel goes after)."""
    cin, h, wd = x.shape
    cout, _, k, _ = w.shape
    before = (k - 1) // 2
    out = np.zeros((cout, h, wd))
    for o in range(cout):
        for i in range(h):
            for j in range(wd):
                total = b[o]
                for di in range(k):
                    for dj in range(k):
                        r, c = i + di - before, j + dj - before
                        if 0 <= r < h and 0 <= c < wd:
                            total += np.dot(w[o, :, di, dj], x[:, r, c])
                out[o, i, j] = total
    return out


@pytest.mark.parametrize("k", [2, 3, 4])
def test_same_padding_follows_tensorflow(k):
    """Our explicit Pad + pad-free conv against the definition of TensorFlow's 'same' (float64)."""
    rng = np.random.default_rng(k)
    x, w, b = rng.standard_normal((2, 9, 9)), rng.standard_normal((3, 2, k, k)), rng.standard_normal(3)
    total = k - 1
    ours = conv2d(torch.from_numpy(x)[None], torch.from_numpy(w), torch.from_numpy(b), (total // 2, total - total // 2))
    # float64 sums of at most 2*4*4 products of O(1) values: rounding stays near 1e-15
    np.testing.assert_allclose(ours[0].numpy(), _tensorflow_same_conv(x, w, b), rtol=0, atol=1e-12)


def test_grouped_generators_equal_separate_ones():
    """K generators as one grouped network give each target exactly its own generator's image."""
    plan = generator_plan("untrained", 32, 3, 0.25)
    targets = [parse_target(f"class:{i}") for i in range(3)]
    gens = [{k: torch.from_numpy(v).double() for k, v in init_generator(plan, 5, t).items()} for t in targets]
    feature = torch.randn(3, plan.features, dtype=torch.float64)
    stacked = {k: torch.stack([g[k] for g in gens]) for k in gens[0]}
    together = generator_forward(plan, feature, *stacked_generator(plan, stacked), groups=3)
    for i, g in enumerate(gens):
        alone = generator_forward(
            plan, feature[i : i + 1], *stacked_generator(plan, {k: v[None] for k, v in g.items()})
        )
        # float64: the grouped convolution sums the same products; differences are rounding only
        torch.testing.assert_close(together[i : i + 1], alone, rtol=1e-10, atol=1e-10)


def test_decoder_module_matches_frozen_functional_form():
    plan = generator_plan("decoder", 32, 3, 0.25)
    dec = Decoder(plan)
    for bn in dec.bns:  # non-trivial running statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    dec.eval()
    f = torch.randn(4, plan.features)
    torch.testing.assert_close(
        dec(f), generator_forward(plan, f, *frozen_generator(dec.tensors())), rtol=1e-5, atol=1e-5
    )


def test_a_noiseless_untrained_start_is_the_same_in_float32_and_float64():
    """From 224 px the untrained mode adds no noise (sigma 0), so G's input is alpha itself. alpha starts
    spread around 1: a constant one would make the first convolution's output constant over space and
    its BatchNorm normalise rounding errors, so the start would be float rounding amplified (checked
    below: float32 and float64 then give other images)."""
    plan = generator_plan("untrained", 240, 3, 0.1875, linear_head=True)
    params = init_generator(plan, 0, parse_target("class:1"))

    def image(dtype, alpha):
        p = {k: torch.from_numpy(v)[None].to(dtype) for k, v in params.items()}
        return generator_forward(plan, alpha.to(dtype), *stacked_generator(plan, p), groups=1).double()

    alpha = torch.from_numpy(params["alpha"]).reshape(1, -1)
    assert alpha.std() > 0.03
    ref = image(torch.float64, alpha)
    # 11 convolutions and BatchNorms in float32: relative errors of ~1e-6 each; 1e-4 leaves room
    assert (image(torch.float32, alpha) - ref).norm() / ref.norm() < 1e-4
    ones = torch.ones_like(alpha)
    flat = image(torch.float64, ones)
    assert (image(torch.float32, ones) - flat).norm() / flat.norm() > 0.1
