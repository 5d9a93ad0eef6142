"""SWAConfig: per-layer fields take one form, validation names the field (NaN, inf and wrong types too), and
the receptive-field / cost math is exact."""

import json
import math
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from swa_stream import ConfigError, SWAConfig, SWAEncoder

REPO = Path(__file__).resolve().parents[2]


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
    assert single.window == ((5, 1), (5, 1)) and per_layer.window == ((5, 1), (3, 0))
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


# ---- per-layer fields: one form after __post_init__ ------------------------------------------------
PER_LAYER = {"window": st.tuples(st.integers(0, 9), st.integers(0, 3)), "dilation": st.integers(1, 4),
             "downsample": st.integers(1, 3)}


@settings(deadline=None, max_examples=60)
@given(n_layers=st.integers(1, 5), data=st.data())
def test_every_per_layer_field_becomes_a_tuple_of_n_layers(n_layers, data):
    """One value (every layer's), a list or a tuple with one per layer, or None: always a tuple of length
    n_layers, element for element what was meant."""
    given_values, meant = {}, {}
    for name, one in PER_LAYER.items():
        form = data.draw(st.sampled_from(["one", "list", "tuple"] + (["none"] if name == "downsample" else [])))
        if form == "none":
            given_values[name], meant[name] = None, (1,) * n_layers
        elif form == "one":
            value = data.draw(one)
            given_values[name], meant[name] = list(value) if name == "window" else value, (value,) * n_layers
        else:
            values = data.draw(st.lists(one, min_size=n_layers, max_size=n_layers))
            given_values[name] = [list(v) for v in values] if name == "window" and form == "list" else (
                values if form == "list" else tuple(values))
            meant[name] = tuple(values)
    cfg = SWAConfig(d_model=16, n_heads=2, n_layers=n_layers, **given_values)
    for name in PER_LAYER:
        assert getattr(cfg, name) == meant[name] and isinstance(getattr(cfg, name), tuple), name
    assert cfg.windows == list(meant["window"]) and cfg.dilations == list(meant["dilation"])
    assert cfg.strides == list(meant["downsample"])
    assert SWAConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert SWAConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg  # plain lists only


@torch.no_grad()
def test_one_downsample_value_for_every_layer_builds_a_working_encoder():
    # `downsample=2` used to pass validation and then fail with a TypeError inside the encoder
    cfg = SWAConfig(d_model=16, n_heads=2, n_layers=2, window=(3, 0), downsample=2, dilation=2)
    assert cfg.strides == [2, 2] and cfg.rates == [2, 4] and cfg.dilations == [2, 2]
    y = SWAEncoder(cfg).eval()(torch.randn(1, 12, 16))
    assert y.shape == (1, 12, 16) and torch.isfinite(y).all()


@pytest.mark.parametrize("field, value, message", [
    ("downsample", [1, 2], "downsample: 2 per-layer values given but n_layers is 3"),
    ("downsample", 0, "downsample: expected positive integers"),
    ("dilation", (1, 1, 1, 1), "dilation: 4 per-layer values given but n_layers is 3"),
    ("dilation", "2", "dilation: expected positive integers"),
    ("window", [[1, 0], [1, 0]], "window: 2 per-layer pairs given but n_layers is 3"),
])
def test_a_per_layer_field_of_the_wrong_length_or_type_is_named(field, value, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        SWAConfig(n_layers=3, **{field: value})


def test_a_checkpoint_pickled_with_the_old_forms_is_normalised_on_load(tmp_path):
    """Checkpoints written before the normalisation hold a single window pair and downsample=None."""
    cfg = SWAConfig(d_model=16, n_heads=2, n_layers=3, window=(4, 1))
    cfg.__dict__.update(window=(4, 1), dilation=1, downsample=None)  # what the old __post_init__ stored
    torch.save({"encoder": cfg}, tmp_path / "old.ckpt")
    with torch.serialization.safe_globals([SWAConfig]):
        loaded = torch.load(tmp_path / "old.ckpt", weights_only=True)["encoder"]
    assert loaded == SWAConfig(d_model=16, n_heads=2, n_layers=3, window=(4, 1))
    assert loaded.windows == [(4, 1)] * 3 and loaded.strides == [1, 1, 1]


def test_to_dict_writes_a_field_that_every_layer_shares_once():
    uniform = SWAConfig(d_model=16, n_heads=2, n_layers=3, window=(4, 1), dilation=[2, 2, 2])
    written = uniform.to_dict()
    assert (written["window"], written["dilation"], written["downsample"]) == ([4, 1], 2, 1)
    mixed = SWAConfig(d_model=16, n_heads=2, n_layers=2, window=[(4, 1), (4, 0)], downsample=[1, 2])
    assert mixed.to_dict()["window"] == [[4, 1], [4, 0]] and mixed.to_dict()["downsample"] == [1, 2]


@pytest.mark.parametrize("bundle", sorted((REPO / "pipelines" / "models").glob("*/config.json")),
                         ids=lambda p: p.parent.name)
def test_the_shipped_bundles_encoder_configs_load_and_round_trip(bundle):
    written = json.loads(bundle.read_text())["config"]["encoder"]
    cfg = SWAConfig.from_dict(written)
    assert len(cfg.window) == cfg.n_layers == len(cfg.dilation) == len(cfg.downsample)
    assert SWAConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# ---- numbers: NaN, inf and wrong types ----------------------------------------------------------------
FLOAT_FIELDS = [f.name for f in fields(SWAConfig) if "float" in str(f.type)]


def test_the_float_fields_are_found():
    assert set(FLOAT_FIELDS) >= {"dropout", "norm_eps", "rope_base", "frame_rate", "span_penalty"}


@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_are_refused_in_every_float_field(field, value):
    with pytest.raises(ConfigError, match=rf"^{field}: must be a finite number"):
        SWAConfig(**{field: value})


@pytest.mark.parametrize("field", [f.name for f in fields(SWAConfig)])
def test_a_value_of_the_wrong_type_names_its_field_never_a_comparison_error(field):
    wrong = 5 if field == "frame_unit" else "0.1"
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        SWAConfig(**{field: wrong})


def test_a_string_number_says_what_was_expected():
    with pytest.raises(ConfigError, match=r"^dropout: must be a number, got '0.1'$"):
        SWAConfig(dropout="0.1")
    with pytest.raises(ConfigError, match=r"^frame_rate: must be a number or null, got '25'$"):
        SWAConfig(frame_rate="25")


def test_float_fields_accept_integers_and_numpy_scalars_and_store_floats():
    cfg = SWAConfig(rope_base=500, norm_eps=np.float32(1e-6), frame_rate=np.int64(25), dropout=0)
    assert (cfg.rope_base, cfg.frame_rate, cfg.dropout) == (500.0, 25.0, 0.0)
    assert all(type(getattr(cfg, f)) is float for f in FLOAT_FIELDS)
    json.dumps(cfg.to_dict())  # numpy scalars would not serialise
