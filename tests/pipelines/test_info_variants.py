"""`swa-stream info` accounts for every variant: receptive field, lookahead, state and what reaches past
the field; for a model with adaptive spans, the spans it learned and the state they save."""

import torch
import yaml

from swa_stream import SWAConfig, SWAEncoder
from swa_stream.bundle import save_encoder
from swa_stream.pipelines.cli import main

ALL = dict(d_model=32, n_heads=2, n_layers=3, window=[4, 1], global_tokens=2, sink_tokens=3, dilation=[1, 2, 1],
           downsample=[1, 1, 2], adaptive_span=True)


def test_info_accounts_for_every_variant(tmp_path, capsys):
    path = tmp_path / "enc.yaml"
    path.write_text(yaml.safe_dump(ALL))
    assert main(["info", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    cfg = SWAConfig(**ALL)
    left, right = cfg.receptive_field()
    assert (left, right) == (4 + 8 + 9, 1 + 2 + 3)  # layer 3 runs at half rate: 4 x 2 + 1 back, 1 x 2 + 1 ahead
    assert f"{left} positions back, {right} positions ahead" in out
    assert f"step emits position t after receiving t + {right}" in out
    assert "dilation 1, 2, 1; rates 1/1, 1/1, 1/2 (downsample 1, 1, 2); adaptive span" in out
    assert "2 global token(s) per layer summarise every earlier position" in out
    assert "the first 3 positions of each layer's input (sinks) stay visible" in out
    state_kib = f"{cfg.state_bytes() / 1024:.2f} KiB"
    assert state_kib in out


def test_info_on_a_model_reports_learned_spans_and_the_state_they_save(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = SWAConfig(d_model=32, n_heads=2, n_layers=2, window=(20, 0), adaptive_span=True, span_ramp=2)
    enc = SWAEncoder(cfg)
    with torch.no_grad():
        enc.blocks[0].attn.span.copy_(torch.tensor([3.0, 6.5]) / 20)  # heads see 4 and 8 keys back
        enc.blocks[1].attn.span.copy_(torch.tensor([20.0, 1.0]) / 20)  # 20 (the window) and 2
    save_encoder(tmp_path / "m", enc)
    assert main(["info", "--model", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "layer 0: 4, 8 keys back per head (of 20)" in out and "layer 1: 20, 2" in out
    trimmed = cfg.layer_state_bytes(0, left=8) + cfg.layer_state_bytes(1, left=20)
    assert f"trimmed state     {trimmed / 1024:.2f} KiB" in out
    live = enc.init_state(1).nbytes()
    assert live == trimmed  # what a stream really holds
