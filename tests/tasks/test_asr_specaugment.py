"""SpecAugment's frequency warp (tasks/asr/module.py): a ramp over the mel bins is warped exactly as linear
interpolation says, factor 1 changes nothing, and nothing is touched outside training."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream.config import ConfigError
from swa_stream.tasks.asr.module import SpecAugment


@settings(max_examples=40, deadline=None)
@given(m=st.integers(2, 96), factor=st.floats(0.5, 1.5), frames=st.integers(1, 7))
def test_a_ramp_is_warped_to_the_stretched_ramp(m, factor, frames):
    ramp = torch.arange(m, dtype=torch.float64).expand(2, frames, m).clone()
    out = SpecAugment.warp(ramp, torch.tensor([1.0, factor], dtype=torch.float64))
    torch.testing.assert_close(out[0], ramp[0])
    expected = (torch.arange(m, dtype=torch.float64) * factor).clamp(max=m - 1).expand(frames, m)
    torch.testing.assert_close(out[1], expected)


def test_warp_moves_a_formant_and_keeps_the_frames():
    feats = torch.zeros(1, 3, 80)
    feats[0, :, 40] = 1.0  # one bright bin
    out = SpecAugment.warp(feats, torch.tensor([0.8]))  # bin k reads bin 0.8 k: bin 40 shows at bin 50
    assert out.shape == feats.shape and int(out[0, 0].argmax()) == 50 and out[0, :, 50].eq(1).all()


def test_only_training_changes_features():
    aug = SpecAugment(freq_masks=0, time_masks=0, freq_warp=0.2)
    feats, frames = torch.randn(4, 20, 80), torch.full((4,), 20)
    assert aug.eval()(feats, frames) is feats
    warped = aug.train()(feats, frames)
    assert warped.shape == feats.shape and not torch.equal(warped, feats)
    assert SpecAugment(freq_masks=0, time_masks=0).train()(feats, frames) is feats


def test_a_warp_out_of_range_is_refused():
    from swa_stream.tasks.asr.module import ASRTask

    with pytest.raises(ConfigError, match="freq_warp: must be <= 0.5"):
        ASRTask(encoder={"d_model": 16, "n_heads": 2, "n_layers": 1, "window": [4, 0], "d_ff": 32},
                labels=["_", " ", "a"], freq_warp=0.6)
