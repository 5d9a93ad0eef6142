import atexit
import os
import shutil
import tempfile

# Triton kernels run under its interpreter on CPU; the flag must be set before anything imports triton.
os.environ.setdefault("TRITON_INTERPRET", "1")

# The fused CPU step (kernels/cpu_step.py) compiles into this test session's own cache, which the
# subprocesses the tests start inherit, not into the user's (unless SWA_STREAM_CACHE names one).
if "SWA_STREAM_CACHE" not in os.environ:
    os.environ["SWA_STREAM_CACHE"] = tempfile.mkdtemp(prefix="swa-stream-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SWA_STREAM_CACHE"], True)

import torch  # noqa: E402

# Two cores in CI: more threads only adds contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))


import pytest  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _first(result):
    """A step's or flush's outputs: the first item of a tuple (the rest is state or other results)."""
    return result[0] if isinstance(result, tuple) else result


def _stream(module, x, chunk_sizes, start_position=None, **init):
    """Feed x (B, T, ...) to `module` in chunks of `chunk_sizes`; return cat(step outputs + flush), the per-step
    outputs and the state before the flush."""
    if start_position is not None:
        init["start_position"] = start_position
    state = module.init_state(x.shape[0], **init)
    outs, i = [], 0
    for size in chunk_sizes:
        out, state = module.step(x[:, i : i + size], state)
        outs.append(out)
        i += size
    assert i == x.shape[1]
    return torch.cat(outs + [_first(module.flush(state))], dim=1), outs, state


def assert_streams_exactly(module, x, chunkings, offline=None, atol=1e-5, **init):
    """The project's key test, for any streaming module: for every chunking (a list of chunk sizes),
    cat(step outputs + flush) equals the offline output (default: `module(x)`, or its first item)."""
    expected = _first(module(x)) if offline is None else offline
    for sizes in chunkings:
        streamed, *_ = _stream(module, x, sizes, **init)
        torch.testing.assert_close(streamed, expected, rtol=0, atol=atol, msg=lambda m, s=sizes: f"chunks {s}: {m}")


def stream_ragged(module, xs, chunkings, joins, init, pad=torch.randn_like, on_flush=None):
    """Stream several streams through `module` as one ragged batch, the way a server runs them: stream s
    joins the batch (`type(state).cat`) at step joins[s] with state `init(s)`, takes chunkings[s][k] new
    positions (0 allowed) at its k-th step, and once it has taken all of them it is flushed and leaves
    (`state.select`). xs[s] is (T_s, ...); padding rows of a chunk are `pad`ded garbage. Returns each
    stream's outputs, cat(step outputs + flush), (T'_s, ...); `on_flush(s, rest)` gets the rest of a
    stream's flush result (e.g. the DNA model's class logits)."""
    n = len(xs)
    outs, pos, taken = [[] for _ in range(n)], [0] * n, [0] * n
    state, active, step = None, [], 0
    assert all(chunkings), "every stream takes at least one step (a size of 0 is fine)"
    while any(taken[s] < len(chunkings[s]) for s in range(n)):
        for s in range(n):
            if joins[s] == step:
                new = init(s)
                state = new if state is None else type(new).cat([state, new])
                active.append(s)
        step += 1
        if not active:
            continue
        sizes = [chunkings[s][taken[s]] if taken[s] < len(chunkings[s]) else 0 for s in active]
        width = max(sizes) + step % 2  # sometimes a padding row even in the longest
        rows = []
        for s, size in zip(active, sizes, strict=True):
            part = xs[s][pos[s] : pos[s] + size]
            rows.append(torch.cat([part, pad(xs[s][:1].expand(width - size, *xs[s].shape[1:]))]))
            pos[s] += size
            taken[s] += 1
        out, lengths, state = module.step(torch.stack(rows), state, counts=torch.tensor(sizes))
        for r, s in enumerate(active):
            outs[s].append(out[r, : int(lengths[r])])
        done = [r for r, s in enumerate(active) if taken[s] >= len(chunkings[s])]
        if done:
            tail, lengths, *rest = module.flush(state.select(done), with_lengths=True)
            for i, r in enumerate(done):
                outs[active[r]].append(tail[i, : int(lengths[i])])
                if on_flush is not None:
                    on_flush(active[r], [part[i] for part in rest])
            keep = [r for r in range(len(active)) if r not in done]
            active = [active[r] for r in keep]
            state = state.select(keep) if keep else None
    assert all(p == x.shape[0] for p, x in zip(pos, xs, strict=True))
    return [torch.cat(o) for o in outs]


def draw_chunks(draw, length: int, sizes) -> list[int]:
    """A chunking of `length` positions drawn from `sizes` (0 allowed: an empty step; put it after a
    nonzero size so that hypothesis's smallest example is short)."""
    chunks = []
    while sum(chunks) < length:
        chunks.append(min(length - sum(chunks), draw(st.sampled_from(sizes))))
    return chunks


@pytest.fixture(scope="session")
def chunks():
    """`draw_chunks(draw, length, sizes)`: a chunking for hypothesis (`data.draw` or a composite's draw)."""
    return draw_chunks


@pytest.fixture(scope="session")
def stream():
    """The streaming half of the project's key test, shared by the test files (hypothesis-safe: session)."""
    return _stream


@pytest.fixture(scope="session")
def streams_exactly():
    """`assert_streams_exactly(module, x, chunkings, offline=None, atol=1e-5, **init_state_kwargs)`."""
    return assert_streams_exactly


@pytest.fixture(scope="session")
def ragged():
    """`stream_ragged(module, xs, chunkings, joins, init, pad, on_flush)`: many streams in one ragged batch."""
    return stream_ragged
