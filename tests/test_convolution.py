import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from napari_selfmsnet.core.convolution import center_crop, downsample, scale_geometry, valid_convolve


class TestValidConvolve:
    @pytest.mark.parametrize("kshape", [(3, 3), (5, 7), (9, 1 + 2 * 2)])
    @pytest.mark.parametrize("shape", [(20, 20), (21, 18)])
    def test_matches_scipy_true_convolution(self, rng, shape, kshape):
        x = rng.random(shape)
        k = rng.random(kshape)
        expected = convolve2d(x, k, mode="valid")
        got = valid_convolve(torch.from_numpy(x)[None, None], torch.from_numpy(k))[0, 0].numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)

    def test_channels_blurred_independently(self, rng):
        x = torch.from_numpy(rng.random((1, 3, 16, 16)))
        k = torch.from_numpy(rng.random((5, 5)))
        out = valid_convolve(x, k)
        assert out.shape == (1, 3, 12, 12)
        for c in range(3):
            np.testing.assert_allclose(out[0, c].numpy(), convolve2d(x[0, c].numpy(), k.numpy(), mode="valid"))

    def test_delta_at_centre_is_the_centre_crop(self, rng):
        x = torch.from_numpy(rng.random((1, 1, 15, 17)))
        k = torch.zeros(5, 7, dtype=x.dtype)
        k[2, 3] = 1
        torch.testing.assert_close(valid_convolve(x, k), center_crop(x, (5, 7)))

    def test_non_contiguous_input(self, rng):
        x = torch.from_numpy(rng.random((1, 1, 20, 20))).transpose(-1, -2)
        k = torch.from_numpy(rng.random((3, 3)))
        expected = convolve2d(x[0, 0].numpy(), k.numpy(), mode="valid")
        np.testing.assert_allclose(valid_convolve(x, k)[0, 0].numpy(), expected)

    def test_kernel_larger_than_image_raises(self):
        with pytest.raises(ValueError, match="smaller than the kernel"):
            valid_convolve(torch.zeros(1, 1, 4, 4), torch.ones(5, 5))

    def test_gradcheck(self, rng):
        x = torch.from_numpy(rng.random((1, 1, 8, 8))).requires_grad_()
        k = torch.from_numpy(rng.random((3, 3))).requires_grad_()
        assert torch.autograd.gradcheck(valid_convolve, (x, k))


class TestScaleGeometry:
    def test_sizes_and_odd_kernels(self):
        geo = scale_geometry((255, 255), (19, 19), (0.125, 0.25, 0.5, 1.0))
        assert [g.image for g in geo] == [(31, 31), (63, 63), (127, 127), (255, 255)]
        assert [g.kernel for g in geo] == [(3, 3), (5, 5), (9, 9), (19, 19)]
        assert geo[-1].padded == (273, 273)

    def test_too_small_for_scales_raises(self):
        with pytest.raises(ValueError, match="self-msnet-s"):
            scale_geometry((20, 20), (7, 7), (0.125, 1.0))


def test_downsample_area_average():
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    out = downsample(x, (2, 2))
    torch.testing.assert_close(out[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
