"""``benchmarks/error_split.py``: registration of old results, the error split, the clip ceiling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _benchmarks import BENCHMARKS, LEVIN, needs_levin, run_script

from napari_selfmsnet.engine.convolution import valid_convolve
from napari_selfmsnet.evaluation.levin import LevinCase, load_levin_case


@pytest.fixture(scope="module")
def split():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        import error_split as module

        yield module


def _case(rng: np.random.Generator, size: int = 64) -> tuple[LevinCase, np.ndarray]:
    """A sharp image of blocks, its blur by a centred 5 x 5 kernel (edge-padded), as a LevinCase."""
    sharp = np.kron(rng.uniform(0.1, 0.9, (size // 8, size // 8)), np.ones((8, 8)))
    kernel = np.zeros((5, 5), np.float32)
    kernel[2, 1:4] = 1 / 3
    padded = np.pad(sharp, 2, mode="edge").astype(np.float32)
    blurred = valid_convolve(torch.from_numpy(padded)[None, None], torch.from_numpy(kernel))[0, 0].numpy()
    case = LevinCase("im0_kernel0", blurred.astype(np.float64), sharp, kernel, False, 0.0, 0.0)
    return case, kernel


def test_an_off_centre_kernel_moves_the_image_with_it(split):
    image = np.arange(100, dtype=np.float32).reshape(10, 10)
    kernel = np.zeros((5, 5), np.float32)
    kernel[3, 4] = 1.0  # mass one row down, two columns right of the centre
    moved, centred = split.registered(image, kernel)
    np.testing.assert_array_equal(moved, np.roll(image, (1, 2), axis=(0, 1)))
    assert centred[2, 2] == pytest.approx(1.0) and centred.sum() == pytest.approx(1.0)
    # A centred kernel (what deblur returns since bb123ef) leaves both as they are.
    same, kept = split.registered(image, centred)
    np.testing.assert_array_equal(same, image)
    np.testing.assert_array_equal(kept, centred)


def test_the_true_image_explains_the_data_and_its_error_shares_add_up(split):
    case, kernel = _case(np.random.default_rng(0))
    exact = split.describe(case.sharp.astype(np.float32), kernel, case, border=4)
    assert exact["data_fit_rms"] < 1e-6
    assert exact["psnr"] > 60
    noisy_image = case.sharp + np.random.default_rng(1).normal(0, 0.02, case.sharp.shape)
    noisy = split.describe(noisy_image.astype(np.float32), kernel, case, border=4)
    assert 25 < noisy["psnr"] < 40
    assert noisy["data_fit_rms"] > 1e-3
    assert sum(noisy["error_share"]) == pytest.approx(1.0)
    assert sum(noisy["pixel_share"]) == pytest.approx(1.0)
    assert len(noisy["error_share"]) == len(split.BANDS) + 1


def test_clip_ceiling_is_infinite_inside_the_blurred_range_and_finite_outside(split):
    case, _ = _case(np.random.default_rng(2))
    inside = LevinCase(case.name, case.blurred, np.clip(case.sharp, case.blurred.min(), case.blurred.max()),
                       case.kernel, False, 0.0, 0.0)  # fmt: skip
    assert split.clip_ceiling(inside) == {"clip_psnr": float("inf"), "outside_fraction": 0.0}
    sharp = inside.sharp.copy()
    sharp[0, 0] = case.blurred.max() + 0.1
    ceiling = split.clip_ceiling(LevinCase(case.name, case.blurred, sharp, case.kernel, False, 0.0, 0.0))
    assert ceiling["outside_fraction"] == pytest.approx(1 / sharp.size)
    assert ceiling["clip_psnr"] == pytest.approx(-10 * np.log10(0.01 / sharp.size))


@needs_levin
def test_script_scores_a_saved_result_against_the_sparse_finish(tmp_path):
    case = load_levin_case(LEVIN, 1, 5)
    saved = tmp_path / "saved"
    saved.mkdir()
    # The sharp image and true kernel stand in for a perfect run's saved result.
    np.savez(saved / "im1_kernel5.npz", image=case.sharp.astype(np.float32), kernel=case.kernel.astype(np.float32))
    out = tmp_path / "split.json"
    done = run_script("error_split.py", "--images", "im1_kernel[15]", "--saved", str(saved), "--out", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert [r["name"] for r in report["images"]] == ["im1_kernel1", "im1_kernel5"]
    first, second = report["images"]
    assert "result" not in first and first["clip_psnr"] > 40
    assert second["result"]["psnr"] > 60
    # The set's sharp and blurred photographs lie a sub-pixel shift apart, so the true pair,
    # compared at whole pixels, leaves a residual (0.015 on this image; 0.006 re-aligned).
    assert second["result"]["data_fit_rms"] < 0.02
    assert 25 < second["sparse_own_kernel"]["psnr"] < second["result"]["psnr"]
