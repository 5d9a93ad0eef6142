"""The streaming resampler at rates that share no factor with 16 kHz: a bounded kernel, the same output
streamed in any chunks as offline, and the right pitch (checked against a pure tone, independently of
torchaudio)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream.errors import SWAStreamError
from swa_stream.tasks.asr.audio import MAX_KERNEL, Resampler, resample, resample_ratio

ODD_RATES = [96001, 44101, 7919, 22051, 192001]


def stream(resampler: Resampler, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    state, outs, i = resampler.init_state(x.shape[0]), [], 0
    sizes = [max(size, x.shape[1] // 100) for size in sizes]  # at most ~100 steps: the kernels are big
    while i < x.shape[1]:
        for size in sizes:
            out, state = resampler.step(x[:, i : i + size], state)
            outs.append(out)
            i += size
    return torch.cat(outs + [resampler.flush(state)], dim=1)


@pytest.mark.parametrize("rate", ODD_RATES)
def test_odd_rates_get_a_small_kernel_and_a_ratio_within_200_ppm(rate):
    orig, new = resample_ratio(rate, 16000)
    assert Resampler(rate, 16000).kernel.numel() <= MAX_KERNEL
    assert abs(16000 * orig / new / rate - 1) < 2e-4


def test_common_rates_stay_exact():
    for rate, ratio in ((44100, (441, 160)), (48000, (3, 1)), (8000, (1, 2)), (22050, (441, 320))):
        assert resample_ratio(rate, 16000) == ratio


@settings(deadline=None, max_examples=10)
@given(rate=st.sampled_from(ODD_RATES), n=st.integers(0, 20000), sizes=st.lists(st.integers(1, 9000), min_size=1),
       seed=st.integers(0, 10**6))
def test_odd_rates_stream_exactly(rate, n, sizes, seed):
    x = torch.randn(1, n, generator=torch.Generator().manual_seed(seed))
    resampler = Resampler(rate, 16000)
    streamed = stream(resampler, x, sizes)
    expected = resample(x, rate, 16000)
    assert streamed.shape == expected.shape
    # Each output sums one kernel row of float32 products; summed in another order (a longer or shorter
    # convolution), the sums may differ by up to taps x eps x max|x|, and do by ~1e-4 for 2,000 taps.
    bound = torch.finfo(torch.float32).eps * resampler.kernel.shape[-1] * (float(x.abs().max()) if n else 0.0)
    torch.testing.assert_close(streamed, expected, rtol=0, atol=bound)


@pytest.mark.parametrize("rate", ODD_RATES)
def test_a_tone_comes_out_at_the_pitch_of_the_ratio_used(rate):
    """Output sample j is input time j / 16000 x (the rate the ratio stands for) / (the true rate)."""
    orig, new = resample_ratio(rate, 16000)
    t = np.arange(rate) / rate  # one second of 440 Hz
    y = resample(torch.from_numpy(np.sin(2 * np.pi * 440 * t)).float()[None], rate, 16000)[0].numpy()
    mid = np.arange(2000, 14000)  # away from the zero-padded ends
    expected = np.sin(2 * np.pi * 440 * mid / 16000 * (16000 * orig / new) / rate)
    assert np.max(np.abs(y[mid] - expected)) < 0.01


@pytest.mark.parametrize("rate", [0, -1, 999, 768001, 2147483647])
def test_rates_no_audio_has_are_refused(rate):
    with pytest.raises(SWAStreamError, match="outside 1,000-768,000 Hz"):
        Resampler(rate, 16000)
