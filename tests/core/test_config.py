"""SWAConfig: validation names the field, and the receptive-field / cost math is exact."""

import json

import pytest
import torch

from swa_stream import ConfigError, SWAConfig, SWAEncoder


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(window=(-1, 0)), "window"),
        (dict(window=(4, -2)), "window"),
        (dict(window=[]), "window"),
        (dict(window=[(4, 0), (-3, 0)], n_layers=2), r"window\[1\]"),
        (dict(window=[(4, 0)] * 3, n_layers=2), "window"),
        (dict(window="wide"), "window"),
        (dict(d_model=65, n_heads=4), "d_model"),
        (dict(d_model=12, n_heads=4), "d_model"),  # head size 3 is odd: no rotary pairs
        (dict(n_heads=0), "n_heads"),
        (dict(n_layers=0), "n_layers"),
        (dict(d_ff=0), "d_ff"),
        (dict(dropout=1.0), "dropout"),
        (dict(frame_rate=0.0), "frame_rate"),
    ],
)
def test_bad_config_raises_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}"):
        SWAConfig(**kwargs)


def test_config_errors_are_user_errors():
    with pytest.raises(ConfigError):
        SWAConfig(window=(-1, 0))


def test_unknown_field_in_dict_is_named():
    with pytest.raises(ValueError, match="^windw"):
        SWAConfig.from_dict({"windw": [4, 0]})


def test_seed_example_32_layers_of_256_is_computed_exactly():
    cfg = SWAConfig(d_model=64, n_heads=4, n_layers=32, window=(256, 0))
    assert cfg.receptive_field() == (32 * 256, 0)
    assert [cfg.receptive_field(n)[0] for n in (1, 2, 32)] == [256, 512, 8192]


def test_per_layer_windows_sum():
    cfg = SWAConfig(d_model=32, n_heads=2, n_layers=3, window=[(8, 0), (16, 2), (32, 1)])
    assert cfg.receptive_field() == (56, 3)
    assert cfg.lookahead == 3
    assert cfg.windows == [(8, 0), (16, 2), (32, 1)]


def test_yaml_style_lists_are_accepted_and_round_trip_through_json():
    single = SWAConfig.from_dict({"d_model": 32, "n_heads": 2, "n_layers": 2, "window": [5, 1]})
    per_layer = SWAConfig.from_dict({"d_model": 32, "n_heads": 2, "n_layers": 2, "window": [[5, 1], [3, 0]]})
    assert single.window == (5, 1) and per_layer.window == [(5, 1), (3, 0)]
    for cfg in (single, per_layer):
        assert SWAConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_param_count_matches_the_module():
    cfg = SWAConfig(d_model=48, n_heads=3, n_layers=3, window=[(4, 0), (2, 2), (0, 1)], d_ff=80)
    assert cfg.param_count() == sum(p.numel() for p in SWAEncoder(cfg).parameters())


def test_state_bytes_match_the_real_state():
    cfg = SWAConfig(d_model=32, n_heads=4, n_layers=3, window=[(7, 0), (5, 3), (0, 2)])
    state = SWAEncoder(cfg).init_state(batch_size=3)
    assert state.nbytes() == 3 * cfg.state_bytes()
    assert SWAEncoder(cfg).init_state(1, dtype=torch.bfloat16).nbytes() == cfg.state_bytes(element_size=2)


def test_flops_grow_with_the_window_only_in_attention():
    small = SWAConfig(d_model=64, n_heads=4, n_layers=1, window=(15, 0))
    big = SWAConfig(d_model=64, n_heads=4, n_layers=1, window=(31, 0))
    assert big.flops_per_position() - small.flops_per_position() == 2 * 2 * 64 * 16
