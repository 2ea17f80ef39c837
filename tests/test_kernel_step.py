import numpy as np
import pytest
import torch

from napari_selfmsnet.engine.convolution import center_crop, valid_convolve
from napari_selfmsnet.engine.kernel_step import (
    LatentPrior,
    clean_kernel,
    edge_mask,
    estimate_kernel,
    posterior_variance_term,
    solve_kernel,
    woodbury_centering,
)
from napari_selfmsnet.evaluation.metrics import kernel_similarity
from napari_selfmsnet.evaluation.synth import motion_kernel, phantom


def _sharp_blurred_pair(kernel: np.ndarray, size: int = 96, seed: int = 3):
    k = kernel.shape[0]
    from skimage import data
    from skimage.transform import resize

    sharp = resize(data.camera().astype(np.float64) / 255, (size + k - 1, size + k - 1), anti_aliasing=True)
    padded = torch.from_numpy(sharp).float()[None, None]
    blurred = valid_convolve(padded, torch.from_numpy(kernel).float())
    return center_crop(padded, kernel.shape), blurred


class TestWoodbury:
    @pytest.mark.parametrize("shape", [(3, 3), (5, 7), (9, 9)])
    def test_equals_dense_solve(self, rng, shape):
        size = (24, 20)
        z = torch.from_numpy(rng.normal(size=shape))
        # Any positive, conjugate-symmetric spectrum: take |FFT|^2 of a random image plus lambda.
        spectrum = torch.fft.rfft2(torch.from_numpy(rng.normal(size=size)))
        denominator = spectrum.real**2 + spectrum.imag**2 + 0.1
        gamma = 2.5
        got = woodbury_centering(z, denominator, size, gamma)

        n = shape[0] * shape[1]
        rows = (torch.arange(shape[0], dtype=z.dtype) - shape[0] // 2) / shape[0]
        cols = (torch.arange(shape[1], dtype=z.dtype) - shape[1] // 2) / shape[1]
        u = rows[:, None].expand(shape).reshape(-1)
        v = cols[None, :].expand(shape).reshape(-1)

        def p_inverse(t):
            full = torch.fft.irfft2(torch.fft.rfft2(t.reshape(shape), s=size) / denominator, s=size)
            return full[: shape[0], : shape[1]].reshape(-1)

        a, b = gamma * p_inverse(u), gamma * p_inverse(v)
        dense = torch.eye(n, dtype=z.dtype) + torch.outer(a, u) + torch.outer(b, v)
        expected = torch.linalg.solve(dense, z.reshape(-1)).reshape(shape)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)

    def test_centring_moves_centroid_towards_centre(self, rng):
        shape, size = (9, 9), (32, 32)
        z = torch.zeros(shape, dtype=torch.float64)
        z[4, 7] = 1.0  # a kernel off to the right
        denominator = torch.full((size[0], size[1] // 2 + 1), 1.0, dtype=torch.float64)
        out = woodbury_centering(z, denominator, size, 50.0)
        cols = torch.arange(9, dtype=torch.float64) - 4
        assert (out.sum(0) * cols).sum() / out.sum() < 3.0


class TestKernelStep:
    def test_recovers_motion_kernel_from_sharp_blurred_pair(self):
        kernel = motion_kernel(15, rng=7)
        sharp, blurred = _sharp_blurred_pair(kernel)
        k = estimate_kernel(
            sharp, blurred, kernel.shape, lam=1e-4, gamma=1e-4, support_factor=2.0,
            prune_fraction=0.01, edge_percentile=None,
        )
        assert k.shape == kernel.shape
        assert float(k.min()) >= 0
        assert float(k.sum()) == pytest.approx(1.0, abs=1e-5)
        assert kernel_similarity(k.numpy(), kernel) >= 0.9

    def test_edge_mask_keeps_a_minority_of_pixels(self):
        image = torch.from_numpy(phantom((64, 64), rng=1)).float()[None, None]
        mask = edge_mask(image, 90.0)
        assert mask.shape == image.shape
        assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
        assert 0.05 < float(mask.mean()) < 0.8

    def test_solve_runs_on_mask(self):
        x = torch.rand(32, 32, dtype=torch.float64)
        z = solve_kernel(x, x, (5, 5), lam=1e-3, gamma=1e-3, mask=torch.ones_like(x))
        # The same image on both sides: the answer is (close to) the identity blur.
        assert int(torch.argmax(z)) == 12

    def test_clean_kernel_prunes_isolated_speck_and_normalises(self):
        k = torch.zeros(11, 11, dtype=torch.float64)
        k[5, 3:8] = 1.0
        k[0, 0] = 0.004  # a separate component holding < 1% of the mass
        k[9, 9] = -0.5
        out = clean_kernel(k, support_factor=2.0, prune_fraction=0.01)
        assert float(out[0, 0]) == 0.0
        assert float(out.min()) >= 0.0
        assert float(out.sum()) == pytest.approx(1.0)
        assert float(out[5, 5]) > 0.15

    def test_clean_kernel_of_zeros_is_delta(self):
        out = clean_kernel(torch.zeros(5, 5), support_factor=2.0, prune_fraction=0.01)
        assert float(out[2, 2]) == 1.0 and float(out.sum()) == 1.0


def test_the_posterior_variance_term_is_the_summed_variance_of_the_gradients_the_solve_uses():
    x = torch.zeros(32, 32)
    x[:, 16:] = 1.0  # one vertical edge of the full range, flat ground elsewhere
    mask = torch.zeros(32, 32)
    mask[:, 12:20] = 1.0
    point = torch.zeros(9, 9)
    point[4, 4] = 1.0
    line = torch.full((1, 9), 1 / 9).expand(9, 9) * (torch.arange(9)[:, None] == 4)
    sigma = 0.01

    def term(kernel, weight, masked=True):
        prior = LatentPrior(kernel, weight, 0.8, 1.0)
        return float(posterior_variance_term(x, mask if masked else None, prior, sigma))

    # No prior: every gradient is pinned by the data alone, 2 sigma^2 / ||k||^2, in both directions.
    assert term(point, 0.0, masked=False) == pytest.approx(2 * 32 * 32 * 2 * sigma**2)
    assert term(point, 0.0) == pytest.approx(2 * 8 * 32 * 2 * sigma**2)
    assert term(line, 0.0) == pytest.approx(9 * term(point, 0.0), rel=1e-5)  # a 9 px blur: 9 times
    # With the prior, flat ground (its gradient floored at a thousandth of the range) is pinned:
    # nearly all that is left is the edge's column.
    edge = 32 * 2 * sigma**2 / (1 / 9 + 1e-2 * 0.8)
    flat = (2 * 8 * 32 - 32) * 2 * sigma**2 / (1 / 9 + 1e-2 * 0.8 * 1e-3**-1.2)
    assert term(line, 1e-2) == pytest.approx(edge + flat, rel=1e-5)
    assert flat < 0.1 * edge
    outside = (2 * 32 * 32 - 2 * 8 * 32) * 2 * sigma**2 / (1 / 9 + 1e-2 * 0.8 * 1e-3**-1.2)
    assert term(line, 1e-2, masked=False) == pytest.approx(edge + flat + outside, rel=1e-5)
    assert term(line, 1e-2) / term(line, 0.0) < 0.1
