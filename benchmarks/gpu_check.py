"""GPU check of the Triton kernels: correctness against the dense reference, then speed against
FlexAttention and SDPA at N = 32768. Made for one H200 and under 8 minutes; run it through the stager:

    bash benchmarks/gpu_check.sh [--json PATH]          # on the GPU machine
    PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --smoke --json /tmp/gpu_check.json   # CPU, interpreted

Correctness follows FlashAttention's rule (swa_stream.kernels.testing, shared with tests/kernels): against a
float64 reference, the kernel's relative error may be at most twice that of a plain PyTorch run in the same
precision, plus FlashAttention's rounding allowance (eps of that precision).
Speed counts useful work only: forward 4 * N * W * D * H * B flops for W keys per query, backward 2.5x that.
Prints PASS/FAIL lines and a markdown table, and writes JSON. Exit: 0 all pass, 1 a check failed, 2 no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

PEAK_TFLOPS = 790.0  # H200 bf16 dense, as the project quotes it
TIMING_HEAD_DIMS = (64, 128)
TIMING_KEYS = (1024, 4096)  # keys per query W: causal window (W - 1, 0)
START = time.monotonic()


def parse_args(argv=None):
    default_json = os.path.join(os.environ["OUT"], "gpu_check.json") if os.environ.get("OUT") else None
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=default_json, help="where to write results (default $OUT/gpu_check.json, "
                        "else benchmarks/gpu_check.json)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU under TRITON_INTERPRET=1, no timing")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip timings that would start after this")
    parser.add_argument("--seqlen", type=int, default=32768)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--peak-tflops", type=float, default=PEAK_TFLOPS)
    args = parser.parse_args(argv)
    if args.json is None:
        args.json = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_check.json")
    return args


ARGS = parse_args()
if ARGS.smoke:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before torch or triton load

import torch  # noqa: E402

if not ARGS.smoke and not torch.cuda.is_available():
    print("gpu_check: error: no CUDA GPU is visible (run with --smoke for the CPU interpreter check)", file=sys.stderr)
    sys.exit(2)

import triton  # noqa: E402
import triton.testing  # noqa: E402

from swa_stream.kernels import triton_step, triton_swa  # noqa: E402
from swa_stream.kernels.testing import (  # noqa: E402
    attention_reference,
    flash_checks,
    flash_rule,
    forward_backward,
    plain_attention,
    ring_in_position_order,
)

DEVICE = "cpu" if ARGS.smoke else "cuda"
RESULTS = {
    "device": "cpu (interpreter)" if ARGS.smoke else torch.cuda.get_device_name(),
    "torch": torch.__version__,
    "triton": triton.__version__,
    "python": platform.python_version(),
    "smoke": ARGS.smoke,
    "correctness": [],
    "timings": [],
}


def elapsed() -> float:
    return time.monotonic() - START


def save():
    os.makedirs(os.path.dirname(os.path.abspath(ARGS.json)), exist_ok=True)
    with open(ARGS.json, "w") as f:
        json.dump(RESULTS, f, indent=1)


# ---- correctness ---------------------------------------------------------------------------------------
def record(name, check) -> bool:
    """One PASS/FAIL line and one JSON row for a FlashCheck (errors relative, see kernels/testing.py)."""
    dt = str(check.dtype).removeprefix("torch.")
    print(f"{'PASS' if check.ok else 'FAIL'} {name:34s} {dt:8s} rel err {check.err:.3e} "
          f"(plain {check.plain_err:.3e}, bound {check.bound:.3e})")
    RESULTS["correctness"].append(dict(check=name, dtype=dt, rel_err=check.err, plain_rel_err=check.plain_err,
                                       bound=check.bound, ok=check.ok))
    return check.ok


def check_attention(name, dtype, batch, heads, n_q, n_k, dim, window, **placement):
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    q, k, v, do = (torch.randn(batch, heads, n, dim, device=DEVICE, generator=gen).to(dtype)
                   for n in (n_q, n_k, n_k, n_q))
    _, checks = flash_checks(triton_swa.triton_attention, q, k, v, window, grad_out=do, **placement)
    parts = ("fwd", "bwd dq", "bwd dk", "bwd dv")
    return all([record(f"{part} {name}", check) for part, check in zip(parts, checks, strict=True)])


def check_ring(name, dtype, batch, heads, dim, window, end, stream_start, n_new, n_q):
    gen = torch.Generator(device=DEVICE).manual_seed(1)
    capacity = window[0] + window[1]
    q, k_ring, v_ring, k_new, v_new = (torch.randn(batch, heads, n, dim, device=DEVICE, generator=gen).to(dtype)
                                       for n in (n_q, capacity, capacity, n_new, n_new))
    keys, values, where = ring_in_position_order(k_ring, v_ring, k_new, v_new, window, end=end,
                                                 stream_start=stream_start)
    with torch.no_grad():
        got = triton_step.triton_ring_attention(q, k_ring, v_ring, k_new, v_new, window, end=end,
                                                stream_start=stream_start)
        precise = attention_reference(q.double(), keys.double(), values.double(), window, **where)
        plain = plain_attention(q, keys, values, window, **where)
    return record(f"ring {name}", flash_rule(got, precise, plain, "ring"))


def check_variants(name, dtype, fields, length):
    """Sinks, global tokens and dilation reach Triton by composition (kernels/variants.py): an encoder on the
    Triton path against the same weights on the PyTorch path in float64, forward and backward."""
    from swa_stream import SWAConfig, SWAEncoder

    torch.manual_seed(0)
    cfg = SWAConfig(d_model=128, n_heads=2, n_layers=2, window=(31, 8), **fields)
    precise = SWAEncoder(cfg, backend="torch").to(DEVICE, torch.float64)
    fast, plain = (SWAEncoder(cfg, backend=b).to(DEVICE, dtype) for b in ("triton", "torch"))
    fast.load_state_dict(precise.state_dict())
    plain.load_state_dict(precise.state_dict())
    x = torch.randn(2, length, 128, device=DEVICE, dtype=torch.float64)
    lengths = torch.tensor([length, length * 2 // 3], device=DEVICE)
    weights = torch.randn_like(x)
    outs = {which: forward_backward(lambda xi, enc=enc: enc(xi, lengths), [x.to(next(enc.parameters()).dtype)],
                                    weights)
            for which, enc in (("fast", fast), ("precise", precise), ("plain", plain))}
    size = max(max(t.abs().max().item(), 1.0) for t in outs["precise"])  # the pass's size, as flash_checks
    return all([record(f"{part} variants {name}", flash_rule(*(outs[w][i] for w in ("fast", "precise", "plain")),
                                                             part, size))
                for i, part in enumerate(("fwd", "bwd dx"))])


def guarded(check, name, *args, **kwargs) -> bool:
    """One check; a crash (say, a compile error) is a FAIL line, and the other checks still run."""
    try:
        return check(name, *args, **kwargs)
    except Exception as err:  # noqa: BLE001
        print(f"FAIL {name}: {type(err).__name__}: {err}")
        RESULTS["correctness"].append(dict(check=name, ok=False, error=f"{type(err).__name__}: {err}"[:2000]))
        return False


def correctness() -> bool:
    bf16, fp16, fp32 = torch.bfloat16, torch.float16, torch.float32
    if ARGS.smoke:
        lengths = torch.tensor([41, 23], device=DEVICE)
        attention = [("B2 H2 N41 D16 (9,3) lengths", dt, 2, 2, 41, 41, 16, (9, 3), dict(k_lengths=lengths))
                     for dt in (bf16, fp16, fp32)]
        ring = [("B2 H2 D16 (6,2) end=1e12+7", dt, 2, 2, 16, (6, 2), 10**12 + 7, 10**12 + 3, 5, 7)
                for dt in (bf16, fp16, fp32)]
    else:
        lengths = torch.tensor([1000, 731], device=DEVICE)
        chunk = dict(q_offset=816, k_start=50)
        # the bf16 shapes build the same kernel variants as the timings (no k_lengths, N % 128 == 0)
        attention = [("B2 H4 N1024 D64 (127,32) k_start", bf16, 2, 4, 1024, 1024, 64, (127, 32), dict(k_start=5)),
                     ("B1 H4 Nq384 Nk1200 D128 (511,0) chunk", bf16, 1, 4, 384, 1200, 128, (511, 0), chunk)]
        attention += [("B2 H4 N1000 D64 (127,32) lengths", dt, 2, 4, 1000, 1000, 64, (127, 32),
                       dict(k_lengths=lengths)) for dt in (fp16, fp32)]
        ring = [("B2 H4 D64 (256,64) t100 end=1e12+12345", dt, 2, 4, 64, (256, 64), 10**12 + 12345, 10**12 + 100,
                 100, 164) for dt in (bf16, fp16, fp32)]
    ok = True
    for *case, placement in attention:
        ok &= guarded(check_attention, *case, **placement)
    for case in ring:
        ok &= guarded(check_ring, *case)
    variants = dict(sink_tokens=4, global_tokens=2, dilation=[1, 2])
    for dt in (fp32,) if ARGS.smoke else (fp32, bf16):
        ok &= guarded(check_variants, "sinks+global+dilation", dt, variants, 37 if ARGS.smoke else 2000)
    return ok


# ---- timing --------------------------------------------------------------------------------------------
_FLEX = None  # torch.compile(flex_attention), compiled once per head dim
_FLEX_KEYS = None  # a 0-d tensor the mask reads: a new W refills it instead of recompiling


def _band_mask_mod(b, h, q_idx, kv_idx):
    return (q_idx >= kv_idx) & (q_idx - kv_idx < _FLEX_KEYS)


def make_methods(n, keys):
    """name -> callable(q, k, v) for a causal window of `keys` keys, i.e. window = (keys - 1, 0)."""
    import torch.nn.functional as F

    global _FLEX, _FLEX_KEYS
    methods = {"triton (ours)": lambda q, k, v: triton_swa.triton_attention(q, k, v, (keys - 1, 0))}
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        _FLEX = _FLEX or torch.compile(flex_attention, dynamic=False)
        _FLEX_KEYS = torch.tensor(keys, device=DEVICE) if _FLEX_KEYS is None else _FLEX_KEYS.fill_(keys)
        block_mask = create_block_mask(_band_mask_mod, None, None, n, n, device=DEVICE)
        methods["flex_attention"] = lambda q, k, v: _FLEX(q, k, v, block_mask=block_mask)
    except Exception as err:  # noqa: BLE001 - report, keep timing the others
        print(f"  flex_attention unavailable: {err!r}")
    methods["sdpa causal (dense)"] = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    try:
        i = torch.arange(n, device=DEVICE)
        band = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < keys)  # N x N bools: 1 GiB at 32k
        methods["sdpa band mask"] = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=band)
    except torch.OutOfMemoryError:
        print("  sdpa band mask: no memory for the N x N mask")
    return methods


def time_ms(fn, q, k, v, do, backward: bool) -> float:
    def fwd():
        with torch.no_grad():
            fn(q, k, v)

    def fwd_bwd():
        fn(q, k, v).backward(do)

    if backward:
        return triton.testing.do_bench(fwd_bwd, warmup=10, rep=60, grad_to_none=[q, k, v], return_mode="median")
    return triton.testing.do_bench(fwd, warmup=10, rep=60, return_mode="median")


def measure(name, fn, q, k, v, do, backward, fwd_flops) -> dict:
    if elapsed() > ARGS.budget_s:
        return dict(ms=None, note=f"skipped: past the {ARGS.budget_s:.0f} s budget")
    try:
        ms = time_ms(fn, q, k, v, do, backward)
    except Exception as err:  # noqa: BLE001 - OOM or a compile failure: report and go on
        return dict(ms=None, note=f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:160]}")
    finally:
        torch.cuda.empty_cache()
    tflops = fwd_flops * (3.5 if backward else 1.0) / (ms * 1e-3) / 1e12
    row = dict(ms=ms, tflops=tflops, peak_fraction=tflops / ARGS.peak_tflops)
    if name.startswith("triton"):
        kernels = {"fwd": triton_swa._fwd_kernel, "dkdv": triton_swa._bwd_dkdv_kernel, "dq": triton_swa._bwd_dq_kernel}
        row["configs"] = {part: str(getattr(kern, "best_config", None)) for part, kern in kernels.items()}
    return row


def timings():
    n, batch, heads = ARGS.seqlen, ARGS.batch, ARGS.heads
    for dim in TIMING_HEAD_DIMS:
        for keys in TIMING_KEYS:
            gen = torch.Generator(device=DEVICE).manual_seed(2)
            q, k, v, do = (torch.randn(batch, heads, n, dim, device=DEVICE, generator=gen, dtype=torch.bfloat16)
                           for _ in range(4))
            q, k, v = (t.requires_grad_() for t in (q, k, v))
            fwd_flops = 4.0 * n * keys * dim * heads * batch
            for name, fn in make_methods(n, keys).items():
                for backward in (False, True):
                    row = {"method": name, "pass": "fwd+bwd" if backward else "fwd", "N": n, "keys": keys, "D": dim,
                           "B": batch, "H": heads, "dtype": "bf16"}
                    row.update(measure(name, fn, q, k, v, do, backward, fwd_flops))
                    RESULTS["timings"].append(row)
                    print_row(row)
                    save()
            del q, k, v, do
            torch.cuda.empty_cache()


TABLE_HEAD = ("| method | pass | N | keys W | D | B x H | ms | TFLOP/s (useful) | of peak |\n"
              "|---|---|---|---|---|---|---|---|---|")


def print_row(row):
    if row.get("ms") is None:
        cells = ("-", row.get("note", ""), "")
    else:
        cells = (f"{row['ms']:.3f}", f"{row['tflops']:.1f}", f"{100 * row['peak_fraction']:.1f}%")
    print(f"| {row['method']} | {row['pass']} | {row['N']} | {row['keys']} | {row['D']} | "
          f"{row['B']} x {row['H']} | " + " | ".join(cells) + " |", flush=True)


def main() -> int:
    print(f"gpu_check on {RESULTS['device']}: torch {torch.__version__}, triton {triton.__version__}, "
          f"kernels from {os.path.dirname(triton_swa.__file__)}")
    print("== correctness (FlashAttention rule: rel err <= 2 x plain-PyTorch rel err + eps) ==")
    ok = correctness()
    RESULTS["all_pass"] = bool(ok)
    save()
    print(f"correctness: {'ALL PASS' if ok else 'SOME FAILED'} ({elapsed():.0f} s)")
    if not ARGS.smoke:
        print(f"\n== timing: bf16, causal window (W-1, 0), peak {ARGS.peak_tflops:.0f} TFLOP/s ==")
        print(TABLE_HEAD, flush=True)
        timings()
        print("\n" + TABLE_HEAD)
        for row in RESULTS["timings"]:
            print_row(row)
    RESULTS["elapsed_s"] = elapsed()
    save()
    print(f"wrote {ARGS.json} ({elapsed():.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
