import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from napari_selfmsnet.engine.convolution import (
    center_crop,
    center_kernel,
    downsample,
    kernel_offset,
    register_to_observation,
    scale_geometry,
    valid_convolve,
)


class TestCentring:
    def test_center_kernel_moves_mass_to_the_centre(self):
        k = torch.zeros(9, 9)
        k[1, 6:9] = 1.0
        out = center_kernel(k)
        rows, cols = torch.meshgrid(torch.arange(9.0), torch.arange(9.0), indexing="ij")
        assert float((out * rows).sum() / out.sum()) == pytest.approx(4, abs=0.5)
        assert float((out * cols).sum() / out.sum()) == pytest.approx(4, abs=0.5)
        assert float(out.sum()) == pytest.approx(1) and float(out.min()) >= 0
        torch.testing.assert_close(out[out > 0].sort().values, (k / k.sum())[k > 0].sort().values)

    def test_centred_kernel_is_returned_as_it_is(self):
        k = torch.zeros(5, 5)
        k[2, 1:4] = 1 / 3
        assert kernel_offset(k) == (0, 0)
        assert center_kernel(k) is k

    def test_mass_moved_off_the_edge_is_dropped(self):
        k = torch.zeros(5, 5)
        k[0, 0], k[4, 4], k[0, 4] = 0.1, 0.1, 0.8  # centre of mass (0.4, 3.6): offset (-2, 2)
        assert kernel_offset(k) == (-2, 2)
        out = center_kernel(k)  # moved by (2, -2): the two light corners fall off
        assert float(out[2, 2]) == pytest.approx(1) and int((out > 0).sum()) == 1

    @pytest.mark.parametrize("offset", [(2, -3), (-3, 0), (0, 0)])
    def test_registered_pair_blurs_alike_and_lies_under_the_observation(self, rng, offset):
        dy, dx = offset
        # A blob whose centre of mass sits `offset` from the centre of a 9 x 11 kernel and
        # that stays inside it when centred, so centring loses nothing.
        k = torch.zeros(9, 11, dtype=torch.float64)
        k[4 + dy - 1 : 4 + dy + 2, 5 + dx - 1 : 5 + dx + 2] = torch.from_numpy(rng.random((3, 3)))
        k[4 + dy, 5 + dx] += 5.0  # keeps the rounded centre of mass on the blob's middle
        k /= k.sum()
        assert kernel_offset(k) == offset
        margin = 5
        world = torch.from_numpy(rng.random((1, 1, 30 + 8 + 2 * margin, 25 + 10 + 2 * margin)))
        padded = world[..., margin : margin + 38, margin : margin + 35]
        observation = valid_convolve(padded, k)

        image, centred = register_to_observation(padded, k)
        assert kernel_offset(centred) == (0, 0) and image.shape == observation.shape
        # The centred kernel blurs the padded output moved by the offset into the observation,
        # and the returned image is that moved output's centre crop: it lies under the observation.
        moved = world[..., margin - dy : margin - dy + 38, margin - dx : margin - dx + 35]
        torch.testing.assert_close(valid_convolve(moved, centred), observation)
        torch.testing.assert_close(image, center_crop(moved, (9, 11)))

    def test_off_centre_delta_gives_the_observation_back(self, rng):
        padded = torch.from_numpy(rng.random((1, 2, 24, 26)))
        k = torch.zeros(7, 9, dtype=padded.dtype)
        k[5, 1] = 1.0
        image, centred = register_to_observation(padded, k)
        torch.testing.assert_close(image, valid_convolve(padded, k))
        assert float(centred[3, 4]) == 1.0


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
        # In words, not as Python's method='self-msnet-s': the widget and the CLI show it as it is.
        with pytest.raises(ValueError, match=r"use fewer scales \(the single-scale method, self-msnet-s\)"):
            scale_geometry((20, 20), (7, 7), (0.125, 1.0))


def test_downsample_area_average():
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    out = downsample(x, (2, 2))
    torch.testing.assert_close(out[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
