import pytest
import torch

from napari_selfmsnet.engine.convolution import scale_geometry
from napari_selfmsnet.engine.losses import differentiable_ssim
from napari_selfmsnet.engine.network import NonLocalBlock, SelfMSNet, canvas_size


@pytest.mark.parametrize("image", [(64, 64), (67, 58)])
@pytest.mark.parametrize("scales", [(0.125, 0.25, 0.5, 1.0), (1.0,)])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shapes_at_every_scale(image, scales, channels):
    geometry = scale_geometry(image, (7, 7), scales)
    padded = [g.padded for g in geometry]
    canvas = canvas_size(padded, scales, depth=5)
    assert canvas[0] % 32 == 0 and canvas[1] % 32 == 0
    net = SelfMSNet(scales, out_channels=channels, width=8)
    inputs = [torch.rand(1, 16, canvas[0] >> lv, canvas[1] >> lv) for lv in net.levels]
    with torch.no_grad():
        outputs = net(inputs, padded)
    assert [tuple(o.shape) for o in outputs] == [(1, channels, *p) for p in padded]
    for o in outputs:
        assert float(o.min()) >= 0 and float(o.max()) <= 1


def test_non_power_of_two_scale_raises():
    with pytest.raises(ValueError, match="powers of 1/2"):
        SelfMSNet((0.3, 1.0))


def test_ssim_loss_matches_scikit_image(rng):
    from skimage.metrics import structural_similarity

    a = rng.random((40, 40))
    b = a + 0.1 * rng.normal(size=a.shape)
    expected = structural_similarity(
        a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    got = differentiable_ssim(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None])
    # scikit-image averages over the padded-cropped image, we over the valid part.
    assert float(got) == pytest.approx(expected, abs=0.02)


def test_ssim_gradcheck(rng):
    a = torch.from_numpy(rng.random((1, 1, 12, 12))).requires_grad_()
    b = torch.from_numpy(rng.random((1, 1, 12, 12)))
    assert torch.autograd.gradcheck(lambda t: differentiable_ssim(t, b), (a,))


def test_non_local_block_is_dot_product_attention_over_pooled_keys():
    # Written out by hand as the quadratic sum over all (query, key) pairs, divided by the
    # number of keys: the factored form in the block must give the same.
    torch.manual_seed(0)
    block = NonLocalBlock(8).eval()
    torch.nn.init.normal_(block.out[1].weight)  # past its identity start
    x = torch.randn(2, 8, 6, 10)
    q = block.theta(x).flatten(2).transpose(1, 2)
    pooled = torch.nn.functional.max_pool2d(x, 2)
    k = block.phi(pooled).flatten(2).transpose(1, 2)
    v = block.g(pooled).flatten(2).transpose(1, 2)
    weights = q @ k.transpose(1, 2) / k.shape[1]
    expected = x + block.out((weights @ v).transpose(1, 2).reshape(2, 4, 6, 10))
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_non_local_block_starts_as_the_identity():
    torch.manual_seed(0)
    block = NonLocalBlock(8)
    x = torch.randn(1, 8, 6, 10)
    torch.testing.assert_close(block(x), x)
    block(x).square().sum().backward()
    # Identity at the start, yet trainable: the zero scale itself receives a gradient.
    assert block.out[1].weight.grad.abs().sum() > 0
