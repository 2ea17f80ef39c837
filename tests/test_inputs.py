"""The engine's checks at the public boundary: dtypes, byte order, values a float32 result can
hold, alpha channels, seeds; and the same inputs through deblur end to end."""

from __future__ import annotations

import re

import numpy as np
import pytest

from napari_selfmsnet import deblur
from napari_selfmsnet.engine.inputs import check_image, check_kernel_size, check_seed, drop_alpha, image_problem
from napari_selfmsnet.engine.intensity import IntensityMap, float32_problem

TINY = {"method": "self-msnet-s", "iterations": 2, "device": "cpu", "seed": 0}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _texture(rng: np.random.Generator, shape=(32, 32)) -> np.ndarray:
    return rng.random(shape)


class TestDtypes:
    @pytest.mark.parametrize(
        "dtype", ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16", "float32", "float64"]
    )
    @pytest.mark.parametrize("order", ["<", ">"])
    def test_every_integer_and_float_dtype_in_either_byte_order(self, rng, dtype, order):
        image = (_texture(rng) * 100).astype(np.dtype(dtype).newbyteorder(order))
        checked = check_image(image)
        assert checked.dtype.isnative and checked.dtype.kind == np.dtype(dtype).kind
        np.testing.assert_array_equal(checked, image)

    def test_native_arrays_are_not_copied(self, rng):
        image = (_texture(rng) * 100).astype(np.int64)
        assert check_image(image) is image

    @pytest.mark.parametrize(
        ("image", "what"),
        [
            (np.zeros((8, 8), bool), "boolean"),
            (np.zeros((8, 8), complex), "complex"),
            (np.zeros((8, 8), object), "object"),
        ],
    )
    def test_other_dtypes_are_refused_with_what_to_pass(self, image, what):
        with pytest.raises(TypeError, match=rf"dtype .* \({what}\) is not supported; pass integer .* or floating-point"):
            check_image(image)

    @pytest.mark.parametrize("dtype", ["int64", ">u2", ">f4", ">i8", "uint64"])
    def test_deblur_accepts_them_and_keeps_the_units(self, rng, dtype):
        counts = (_texture(rng) * 1000 + 50).astype(dtype)
        before = counts.copy()
        result = deblur(counts, 5, **TINY)
        np.testing.assert_array_equal(counts, before)
        assert result.image.dtype == np.float32 and result.params["input_dtype"] == str(np.dtype(dtype).newbyteorder("="))
        assert counts.min() <= np.median(result.image) <= counts.max()

    def test_64_bit_integers_beyond_float64_precision_keep_their_detail(self, rng):
        # 2**62 + small counts: float64 holds the offset to a step of 1024; the range is large
        # enough that float32 resolves it, and the map computes the range exactly.
        image = (_texture(rng) * 2**60).astype(np.int64) + 2**62
        assert image_problem(image) is None
        unit = IntensityMap.fit(image).to_unit(image)
        assert unit.min() == 0 and unit.max() == 1 and len(np.unique(unit)) > 1000


class TestValuesAFloat32ResultCannotHold:
    def test_beyond_float32_range_is_refused_not_returned_as_inf(self, rng):
        with pytest.raises(ValueError, match=r"reach 9.99e\+38, beyond the range of float32 .* \(for example 1e\+09\)"):
            deblur(_texture(rng) * 1e39, 5, **TINY)

    def test_a_large_offset_with_a_small_range_is_refused_not_returned_constant(self, rng):
        with pytest.raises(ValueError, match=r"span only 0.999 at a magnitude of 1e\+12: float32.* subtract the offset"):
            deblur(_texture(rng) + 1e12, 5, **TINY)

    def test_integer_offsets_float32_holds_exactly_are_accepted(self, rng):
        # float32 holds every integer up to 2**24: 16 million counts with a range of 100 are fine.
        image = (_texture(rng) * 100).astype(np.int64) + 16_000_000
        assert float32_problem(image) is None
        assert float32_problem(image + 2**30) is not None  # float32's step is 128 there

    def test_the_range_of_int64_is_measured_exactly(self):
        image = np.full((8, 8), 2**62, np.int64)
        image[0, 0] += 1  # a step float64 cannot see, float32 even less
        assert "span only 1 at a magnitude of 4.61e+18" in image_problem(image)

    @pytest.mark.parametrize("scale", [1.0, 1e-3, 1e6, 1e30])
    def test_ordinary_ranges_pass(self, rng, scale):
        assert float32_problem(_texture(rng) * scale) is None


class TestValues:
    def test_nan_is_counted(self):
        image = np.ones((8, 8))
        image[0, :3] = np.nan
        assert "NaN or infinite values (3 of 64)" in image_problem(image)

    def test_constant_names_the_value(self):
        assert "every value is 7" in image_problem(np.full((8, 8), 7, np.uint16))


class TestAlpha:
    def test_rgba_and_grey_alpha_lose_the_alpha_channel_with_a_warning(self, rng):
        rgba = _texture(rng, (8, 8, 4))
        rgb, warning = drop_alpha(rgba)
        np.testing.assert_array_equal(rgb, rgba[..., :3])
        assert "RGBA: its alpha channel was left out" in warning
        grey, warning = drop_alpha(rgba[..., :2])
        np.testing.assert_array_equal(grey, rgba[..., 0])
        assert "grey and alpha" in warning

    def test_other_images_are_untouched(self, rng):
        for image in (_texture(rng, (8, 8, 3)), _texture(rng, (8, 8))):
            kept, warning = drop_alpha(image)
            assert kept is image and warning is None

    def test_check_image_says_how_to_drop_it(self, rng):
        with pytest.raises(ValueError, match=r"grey and alpha channels last; drop the alpha channel first \(image\[..., 0\]\)"):
            check_image(_texture(rng, (8, 8, 2)))


class TestMessagesSayTheRemedyInWords:
    """The CLI and the widget show these messages as they are: a remedy spelled in Python
    (``np.nan_to_num``, ``method='self-msnet-s'``) means nothing to their users."""

    PYTHON = r"np\.|e\.g\.|\w+=|image\[|image\.\w|image / "

    def _problems(self):
        texture = _texture(np.random.default_rng(0))
        holes = texture.copy()
        holes[2, 2] = np.nan
        return {
            "nan": image_problem(holes),
            "beyond float32": image_problem(texture * 1e300),
            "offset": image_problem(texture + 1e12),
        }

    @pytest.mark.parametrize("case", ["nan", "beyond float32", "offset"])
    def test_value_problems(self, case):
        message = self._problems()[case]
        assert message is not None and not re.search(self.PYTHON, message), message

    def test_the_numbers_received_stay(self):
        problems = self._problems()
        assert "(1 of 1024)" in problems["nan"] and "with 0" in problems["nan"]
        assert "reach 1e+300" in problems["beyond float32"] and "1e+270" in problems["beyond float32"]

    @pytest.mark.parametrize(
        ("size", "shape", "remedy"),
        [
            (21, (40, 40), "use a kernel size of 19 or smaller"),
            (7, (20, 20), "use the single-scale method, self-msnet-s (kernels up to 9)"),
        ],
    )
    def test_kernel_too_large(self, size, shape, remedy):
        with pytest.raises(ValueError, match="is too large") as refused:
            check_kernel_size(size, shape, (0.125, 0.25, 0.5, 1.0))
        message = str(refused.value)
        assert remedy in message and not re.search(self.PYTHON, message), message


class TestSeed:
    @pytest.mark.parametrize("seed", [0, np.int64(5), 2**63 - 1])
    def test_accepted(self, seed):
        assert check_seed(seed) == int(seed) and type(check_seed(seed)) is int

    @pytest.mark.parametrize(("seed", "error"), [(2**70, ValueError), (-1, ValueError), (True, TypeError), (1.0, TypeError)])
    def test_refused_with_the_range(self, seed, error):
        with pytest.raises(error, match="seed must be an int"):
            check_seed(seed)


class TestImagesTooSmallForAnyKernel:
    def test_auto_says_the_image_is_too_small_and_what_works(self, rng):
        # kernel_size="auto" (the default): the user gave no size, so none is named as theirs.
        with pytest.raises(ValueError, match="^a 20x20 image is too small to measure a blur in") as refused:
            deblur(_texture(rng, (20, 20)), device="cpu")
        message = str(refused.value)
        assert "the single-scale method, self-msnet-s (kernels up to 9)" in message and "at least 24x24" in message
        assert "is too large" not in message

    def test_a_size_given_is_named_as_too_large_not_as_measured(self, rng):
        with pytest.raises(ValueError, match="^kernel 7x7 is too large for a 20x20 image, and so is even the smallest"):
            deblur(_texture(rng, (20, 20)), 7, device="cpu")

    def test_the_single_scale_method_names_its_own_smallest_image(self, rng):
        with pytest.raises(ValueError, match="^a 5x40 image is too small .* use an image of at least 6x6$"):
            deblur(_texture(rng, (5, 40)), **TINY)
