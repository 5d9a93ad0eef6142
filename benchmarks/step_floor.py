"""Why asr-demo's streaming step costs what it does on this CPU: the cache penalty of small calls, and
variants of the step measured against the shipped one in paired runs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/step_floor.py cache
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/step_floor.py variants --rounds 40

`cache`: five calls at a step's sizes (attention over 20 keys, a roll, a product, a concatenation, a layer
norm), timed after a linear layer of N MB of weights has run, for N from 0 to 6 (asr-demo's encoder reads 6
MB of weights per chunk, 1 MB per layer; a core's L2 cache here is 2 MB).

`variants`: asr-demo's `step()` on 10 s of noise in 160 ms chunks, the shipped code (A) against a variant (B),
alternating A and B (the order flipped each round) so that both see the same machine; reported as medians of
the per-chunk CPU time and of the per-round ratio B / A. This machine's speed drifts by up to 15% between
runs, so only the paired ratio means much. The variants:

- `pytorch-step`: the fused C step (kernels/cpu_step.c) turned off, so the PyTorch calls it replaces run;
- `frontend-gelu`: the convolution stages' GELU as `F.gelu` (B is the old code, so B / A > 1 is the gain);
- `fused-rope-kv`: the rotation's partner halves from five-block projection weights (no roll), and keys
  and values in one (2, B, H, C, D) ring (one `index_copy` and one concatenation instead of two each);
- `torchscript-layer`: each layer's calls in one `torch.jit.script` function (bitwise the same outputs).

The last two are pure PyTorch: since the fused C step, they are slower than the shipped step (their
figures in docs/benchmarks.md were taken against the PyTorch step before it).

Each variant's largest difference from the shipped step's log-probabilities is printed too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from asr_rtf import chunks_of  # noqa: E402

import swa_stream.encoder as enc  # noqa: E402
import swa_stream.kernels.cpu_step as cpu_step  # noqa: E402
import swa_stream.kernels.ring as ring  # noqa: E402
import swa_stream.tasks.asr.frontend as fe  # noqa: E402
from swa_stream.pipelines.bundles import default_model_dir, load_asr_model  # noqa: E402
from swa_stream.state import LayerState  # noqa: E402


# ---- the cache penalty ------------------------------------------------------------------------------
@torch.inference_mode()
def cache_penalty(repeats: int = 300) -> None:
    q, k, v = torch.randn(1, 4, 4, 36), torch.randn(1, 4, 20, 36), torch.randn(1, 4, 20, 36)
    bias, x = torch.zeros(1, 1, 4, 20), torch.randn(2, 1, 4, 4, 36)

    def five():
        F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x.roll(18, -1)
        x * x
        torch.cat([k, v], 2)
        F.layer_norm(x, (36,))

    h = torch.randn(4, 144)
    print("weights streamed before the five calls | us for the five calls (mean of", repeats, ")")
    for mb in (0, 0.25, 0.5, 1, 2, 4, 6):
        w = torch.randn(max(1, int(mb * 2**20 / 4 / 144)), 144)
        total = 0.0
        for _ in range(repeats):
            if mb:
                F.linear(h, w)
            t = time.perf_counter()
            five()
            total += time.perf_counter() - t
        print(f"{mb:5.2f} MB | {total / repeats * 1e6:6.1f}")


# ---- variants of the step ---------------------------------------------------------------------------
def _fused_weights(block, wqkv, bqkv, heads: int, dim: int):
    """[Wq, Wk, Wv, roll(Wq), roll(Wk)] (rows rolled by dim / 2 within each head), cached on the block (the
    benchmark never changes the weights)."""
    key = (wqkv.data_ptr(), bqkv.data_ptr())
    got = block.__dict__.get("_bench_fused")
    if got is None or got[0] != key:
        d = wqkv.shape[1]
        rolled = wqkv.view(3, heads, dim, d)[:2].roll(dim // 2, dims=2).reshape(2 * heads * dim, d)
        rolled_b = bqkv.view(3, heads, dim)[:2].roll(dim // 2, dims=2).reshape(-1)
        weights = torch.cat([wqkv, rolled]).t().contiguous().t()
        got = block.__dict__["_bench_fused"] = (key, weights, torch.cat([bqkv, rolled_b]))
    return got[1], got[2]


def fused_rope_kv(self, x, state, start, received, parts):
    layers, fed, (batch, t, d), tables = [], received, x.shape, {}
    for block, st, parts_ in zip(self.blocks, state.layers, parts, strict=True):
        n, right, attn, size = fed, block.right, block._modules["attn"], x.shape[1]
        fed = max(0, fed - right)
        if not size:
            layers.append(st)
            continue
        n1w, n1b, eps1, wqkv, bqkv, wo, bo, n2w, n2b, eps2, w1, b1, w2, b2 = parts_
        heads, dim = attn.n_heads, attn.head_dim
        w5, b5 = _fused_weights(block, wqkv, bqkv, heads, dim)
        end, rows = start + n, batch * size
        h = F.layer_norm(x.reshape(rows, d), (d,), n1w, n1b, eps1)
        y5 = F.linear(h, w5, b5).view(batch, size, 5, heads, dim)
        rope = attn._modules["rope"]
        table = tables.get((rope.key, end, size))
        if table is None:
            cos, signed_sin = rope.full_tables(end, size, x.dtype)
            table = tables[rope.key, end, size] = (torch.stack([cos, cos, torch.ones_like(cos)], 1)[:, :, None],
                                                   signed_sin[:, None, None])
        out = y5[:, :, :3] * table[0]  # q and k times cos, v times 1
        out[:, :, :2].addcmul_(y5[:, :, 3:], table[1])
        qkv = out.permute(2, 0, 3, 1, 4)
        q, kv_new = qkv[0], qkv[1:]
        kv = st.__dict__.get("_bench_kv")
        if kv is None:
            kv = torch.stack([st.k, st.v])
        if right:
            queries, resid = torch.cat([st.pending_q, q], dim=2), torch.cat([st.pending_x, x], dim=1)
            pending_q, pending_x = queries[:, :, size:].clone(), resid[:, size:].clone()
            queries, resid = queries[:, :, :size], resid[:, :size]
        else:
            queries, resid, pending_q, pending_x = q, x, st.pending_q, st.pending_x
        capacity = kv.shape[-2]
        keep = min(capacity, size)
        slots = ring.ring_slots(end + size - keep, keep, capacity, kv.device)
        new_kv = kv.index_copy(3, slots, kv_new[:, :, :, size - keep:]) if keep else kv
        layer = LayerState(k=new_kv[0], v=new_kv[1], pending_x=pending_x, pending_q=pending_q)
        layer.__dict__["_bench_kv"] = new_kv
        layers.append(layer)
        k_start = max(0, start - (end - capacity))
        bias = ring._slot_bias(size, capacity, size, *attn.window, end % capacity, k_start, x.device, x.dtype, True)
        both = torch.cat([kv, kv_new], dim=3)
        o = F.scaled_dot_product_attention(queries, both[0], both[1], attn_mask=bias)
        y = F.linear(o.transpose(1, 2).reshape(rows, d), wo, bo)
        y += resid.reshape(rows, d)
        f = F.linear(F.layer_norm(y, (d,), n2w, n2b, eps2), w1, b1)
        y += F.linear(enc.aten_gelu(f), w2, b2)
        x = y.view(batch, size, d)[:, min(size, max(0, right - n)):]
    return self._stepped(x, state, t, layers)


_SCRIPTED = None


def _layer_step(x: torch.Tensor, n1w: torch.Tensor, n1b: torch.Tensor, eps1: float, wqkv: torch.Tensor,
                bqkv: torch.Tensor, wo: torch.Tensor, bo: torch.Tensor, n2w: torch.Tensor, n2b: torch.Tensor,
                eps2: float, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
                cos: torch.Tensor, signed_sin: torch.Tensor, k_ring: torch.Tensor, v_ring: torch.Tensor,
                slots: torch.Tensor, bias: torch.Tensor, pending_q: torch.Tensor, pending_x: torch.Tensor,
                right: int, skip: int, heads: int, dim: int, keep: int):
    batch, size, d = x.shape[0], x.shape[1], x.shape[2]
    rows = batch * size
    h = F.layer_norm(x.reshape(rows, d), [d], n1w, n1b, eps1)
    qkv = F.linear(h, wqkv, bqkv).view(batch, size, 3, heads, dim).permute(2, 0, 3, 1, 4)
    qk = qkv[:2]
    rotated = qk * cos + qk.roll(dim // 2, -1) * signed_sin
    q, k, v = rotated[0], rotated[1], qkv[2]
    if right > 0:
        queries, resid = torch.cat([pending_q, q], dim=2), torch.cat([pending_x, x], dim=1)
        pending_q, pending_x = queries[:, :, size:].clone(), resid[:, size:].clone()
        queries, resid = queries[:, :, :size], resid[:, :size]
    else:
        queries, resid = q, x
    new_k, new_v = k_ring, v_ring
    if keep > 0:
        new_k = k_ring.index_copy(2, slots, k[:, :, size - keep:])
        new_v = v_ring.index_copy(2, slots, v[:, :, size - keep:])
    o = F.scaled_dot_product_attention(queries, torch.cat([k_ring, k], dim=2), torch.cat([v_ring, v], dim=2),
                                       attn_mask=bias)
    y = F.linear(o.transpose(1, 2).reshape(rows, d), wo, bo)
    y += resid.reshape(rows, d)
    f = F.linear(F.layer_norm(y, [d], n2w, n2b, eps2), w1, b1)
    y += F.linear(F.gelu(f.transpose(-1, -2)).transpose(-1, -2), w2, b2)
    return y.view(batch, size, d)[:, skip:], new_k, new_v, pending_q, pending_x


def torchscript_layer(self, x, state, start, received, parts):
    global _SCRIPTED
    if _SCRIPTED is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.script is deprecated
            _SCRIPTED = torch.jit.script(_layer_step)
    layers, fed, t, tables = [], received, x.shape[1], {}
    for block, st, parts_ in zip(self.blocks, state.layers, parts, strict=True):
        n, right, attn, size = fed, block.right, block._modules["attn"], x.shape[1]
        fed = max(0, fed - right)
        if not size:
            layers.append(st)
            continue
        end, rope, capacity = start + n, attn._modules["rope"], st.k.shape[2]
        table = tables.get((rope.key, end, size))
        if table is None:
            table = tables[rope.key, end, size] = rope.full_tables(end, size, x.dtype)
        keep = min(capacity, size)
        slots = ring.ring_slots(end + size - keep, keep, capacity, x.device)
        k_start = max(0, start - (end - capacity))
        bias = ring._slot_bias(size, capacity, size, *attn.window, end % capacity, k_start, x.device, x.dtype, True)
        x, k, v, pending_q, pending_x = _SCRIPTED(x, *parts_, *table, st.k, st.v, slots, bias, st.pending_q,
                                                  st.pending_x, right, min(size, max(0, right - n)), attn.n_heads,
                                                  attn.head_dim, keep)
        layers.append(LayerState(k=k, v=v, pending_x=pending_x, pending_q=pending_q))
    return self._stepped(x, state, t, layers)


def _old_valid(self, x):
    if x.shape[2] < self.K:
        return x.new_zeros(x.shape[0], self.conv.out_channels, 0, (x.shape[3] - 1) // 2 + 1)
    return F.gelu(self.conv(x.contiguous(memory_format=torch.channels_last)))


VARIANTS = {
    "pytorch-step": (cpu_step, "library", lambda: None),  # the C library off (fused step, rotation): torch runs
    "frontend-gelu": (fe._CausalStage, "_valid", _old_valid),
    "fused-rope-kv": (enc.SWAEncoder, "_step_inference", fused_rope_kv),
    "torchscript-layer": (enc.SWAEncoder, "_step_inference", torchscript_layer),
}


@torch.inference_mode()
def variants(names: list[str], rounds: int, seconds: float) -> None:
    model = load_asr_model(default_model_dir("asr"))
    audio = (np.random.default_rng(0).standard_normal(int(16000 * seconds)) * 0.01).astype(np.float32)
    chunks = chunks_of(audio, 2560)

    def run() -> tuple[float, torch.Tensor]:
        state, outs = model.init_state(1), []
        t = time.thread_time()
        for chunk in chunks:
            log_probs, state = model.step(chunk, state)
            outs.append(log_probs)
        return (time.thread_time() - t) / len(chunks) * 1e6, torch.cat(outs, 1)

    for name in names:
        owner, attr, variant = VARIANTS[name]
        shipped = owner.__dict__[attr]
        a_times, b_times, diff = [], [], 0.0
        try:
            for i in range(rounds + 3):  # the first three rounds warm up
                got = {}
                for label, impl in (("A", shipped), ("B", variant)) if i % 2 else (("B", variant), ("A", shipped)):
                    setattr(owner, attr, impl)
                    got[label] = run()
                diff = max(diff, (got["A"][1] - got["B"][1]).abs().max().item())
                if i >= 3:
                    a_times.append(got["A"][0])
                    b_times.append(got["B"][0])
        finally:
            setattr(owner, attr, shipped)
        ratios = [b / a for a, b in zip(a_times, b_times, strict=True)]
        quart = statistics.quantiles(ratios, n=4)
        print(f"{name}: shipped {statistics.median(a_times):.0f} us, variant {statistics.median(b_times):.0f} us "
              f"per chunk (medians of {rounds}); variant / shipped {statistics.median(ratios):.3f} "
              f"(quartiles {quart[0]:.3f}-{quart[2]:.3f}); largest log-prob difference {diff:.1e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["cache", "variants"])
    p.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="default: all")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.what == "cache":
        cache_penalty()
    else:
        variants(args.variant or sorted(VARIANTS), args.rounds, args.seconds)


if __name__ == "__main__":
    main()
