"""Regions of a frame: validation, the strong-edge energy map and the automatic window."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from napari_selfmsnet.engine.regions import (
    AUTO_REGION_SIZE,
    AUTO_REGION_THRESHOLD,
    Region,
    auto_region,
    check_region,
    edge_energy_map,
)
from napari_selfmsnet.engine.stack_plan import select_reference_plane


def _texture(size: int, seed: int = 0) -> np.ndarray:
    """Blobs and bars in [0, 1]: strong edges in several directions."""
    rng = np.random.default_rng(seed)
    patch = ndimage.gaussian_filter(rng.random((size, size)), 2.0)
    patch = (patch > np.median(patch)).astype(float)
    patch[size // 4, :] = 1.0
    patch[:, size // 3] = 0.0
    return patch


def _noisy_flat(shape: tuple[int, int], seed: int = 1, noise: float = 0.05) -> np.ndarray:
    return 0.5 + np.random.default_rng(seed).normal(0, noise, shape)


class TestRegion:
    def test_slices_and_list(self):
        region = Region(top=3, left=5, height=10, width=20)
        image = np.arange(40 * 40).reshape(40, 40)
        np.testing.assert_array_equal(image[region.slices], image[3:13, 5:25])
        assert region.to_list() == [3, 5, 10, 20]

    def test_frozen(self):
        with pytest.raises(dataclasses.FrozenInstanceError):
            Region(0, 0, 10, 10).top = 1


class TestCheckRegion:
    def test_accepts_a_sequence_and_returns_a_region(self):
        region = check_region([np.int64(2), 4, 20, 30], (50, 60, 3), (9, 9))
        assert region == Region(2, 4, 20, 30)
        assert all(type(v) is int for v in region.to_list())

    def test_accepts_a_region_that_fills_the_image(self):
        assert check_region(Region(0, 0, 50, 60), (50, 60), 9) == Region(0, 0, 50, 60)

    @pytest.mark.parametrize("region", [(40, 0, 20, 20), (0, 45, 20, 20), (-1, 0, 20, 20)])
    def test_outside_the_image(self, region):
        with pytest.raises(ValueError, match=r"does not lie inside the 50x60 image: it needs top >= 0"):
            check_region(region, (50, 60), (5, 5))

    def test_smaller_than_twice_the_kernel(self):
        with pytest.raises(ValueError, match=r"region 17x40 is too small for a 9x9 kernel: .* at least twice"):
            check_region((0, 0, 17, 40), (50, 60), (9, 9))

    def test_non_positive_size(self):
        with pytest.raises(ValueError, match=r"height and width must be positive, got 0x20"):
            check_region((0, 0, 0, 20), (50, 60), (3, 3))

    @pytest.mark.parametrize("region", [(0, 0, 20.0, 20), (0, True, 20, 20), Region(0, 0, 20, 20.5)])
    def test_non_int_entries(self, region):
        with pytest.raises(TypeError, match=r"region entries \(top, left, height, width\) must be ints"):
            check_region(region, (50, 60), (3, 3))

    def test_wrong_length(self):
        with pytest.raises(ValueError, match=r"region must have 4 entries \(top, left, height, width\), got 3"):
            check_region((0, 0, 20), (50, 60), (3, 3))

    @pytest.mark.parametrize("region", ["0,0,20,20", 20, None])
    def test_not_a_sequence(self, region):
        with pytest.raises(TypeError, match="region must be a Region or a sequence"):
            check_region(region, (50, 60), (3, 3))


class TestEdgeEnergyMap:
    @pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
    def test_shape_and_dtype(self, dtype):
        image = (_texture(48) * 200).astype(dtype)
        energy = edge_energy_map(image)
        assert energy.shape == (48, 48) and energy.dtype == np.float64

    def test_rgb_is_grey_mean(self):
        grey = _texture(48)
        rgb = np.stack([grey, grey, grey], axis=-1)
        np.testing.assert_allclose(edge_energy_map(rgb), edge_energy_map(grey))

    def test_keeps_only_the_strongest_tenth(self):
        energy = edge_energy_map(_noisy_flat((60, 60)) + _texture(60))
        kept = np.count_nonzero(energy) / energy.size
        assert 0.09 <= kept <= 0.11
        assert energy.min() == 0.0

    @pytest.mark.parametrize("shape", [(1, 10), (10,), (10, 10, 4)])
    def test_bad_shape(self, shape):
        with pytest.raises(ValueError, match=r"image must (have shape \(H, W\) or \(H, W, 3\)|be at least 2x2)"):
            edge_energy_map(np.zeros(shape))


class TestAutoRegion:
    def test_finds_a_planted_textured_patch(self):
        image = _noisy_flat((300, 400))
        image[170:234, 250:314] += _texture(64)
        region = auto_region(image, 96, (9, 9))
        assert (region.height, region.width) == (96, 96)
        # The window holds the whole patch.
        assert region.top <= 170 and region.top + 96 >= 234
        assert region.left <= 250 and region.left + 96 >= 314

    def test_window_the_size_of_the_patch_sits_on_it(self):
        image = _noisy_flat((300, 400))
        image[40:104, 300:364] += _texture(64)
        region = auto_region(image, 64, 9)
        assert abs(region.top - 40) <= 3 and abs(region.left - 300) <= 3

    def test_ties_go_to_the_top_left_most(self):
        image = np.zeros((200, 200))
        image[120:152, 20:52] = _texture(32)
        image[30:62, 140:172] = _texture(32)  # the same patch, higher up
        region = auto_region(image, 32, 5)
        # Both patches give the same best window (up to the Gaussian's spread); the upper wins.
        assert abs(region.top - 30) <= 3 and abs(region.left - 140) <= 3

    def test_a_flat_image_gives_the_first_window(self):
        assert auto_region(np.ones((80, 90)), 40, 5) == Region(0, 0, 40, 40)

    def test_axes_shorter_than_size_are_taken_whole(self):
        image = _noisy_flat((100, 600))
        image[20:84, 400:464] += _texture(64)
        region = auto_region(image, AUTO_REGION_SIZE, 9)
        assert (region.top, region.height, region.width) == (0, 100, AUTO_REGION_SIZE)
        assert region.left <= 400 and region.left + AUTO_REGION_SIZE >= 464
        assert check_region(region, image.shape, (9, 9)) == region

    def test_deterministic(self):
        image = _noisy_flat((150, 150), noise=0.2)
        assert auto_region(image, 50, 5) == auto_region(image.copy(), 50, 5)

    def test_too_small_for_the_kernel(self):
        with pytest.raises(
            ValueError, match=r"automatic region of 30x64 \(size 64 in a 30x200 image\) is too small for a 17x17"
        ):
            auto_region(np.zeros((30, 200)), 64, (17, 17))

    def test_bad_size(self):
        with pytest.raises(ValueError, match="size must be a positive number of pixels, got 0"):
            auto_region(np.zeros((30, 30)), 0, 3)
        with pytest.raises(TypeError, match=r"size must be an int \(the window side in pixels\), got 12.5"):
            auto_region(np.zeros((30, 30)), 12.5, 3)


def test_default_window_holds_large_kernels():
    # Kernels up to ~75 px need a window at least twice as large; the window is smaller
    # than the frames it is used on.
    assert 2 * 75 <= AUTO_REGION_SIZE <= AUTO_REGION_THRESHOLD


class TestReferencePlane:
    def test_stack_scores_planes_by_their_edge_energy(self):
        sharp = _texture(64)
        stack = np.stack([ndimage.gaussian_filter(sharp, 2), sharp, np.full_like(sharp, 0.5)])
        scores = [edge_energy_map(plane).sum() for plane in stack]
        assert select_reference_plane(stack) == int(np.argmax(scores)) == 1
