import os

# Triton kernels run under its interpreter on CPU; the flag must be set before anything imports triton.
os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

# Two cores in CI: more threads only adds contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))


import pytest  # noqa: E402


def _stream(enc, x, chunk_sizes, start_position=0):
    """Feed x (B, T, d) to `enc` in chunks of `chunk_sizes`; return cat(step outputs + flush), the per-step
    outputs and the state before the flush."""
    state = enc.init_state(batch_size=x.shape[0], start_position=start_position)
    outs, i = [], 0
    for size in chunk_sizes:
        out, state = enc.step(x[:, i : i + size], state)
        outs.append(out)
        i += size
    assert i == x.shape[1]
    return torch.cat(outs + [enc.flush(state)], dim=1), outs, state


@pytest.fixture(scope="session")
def stream():
    """The streaming half of the project's key test, shared by the test files (hypothesis-safe: session)."""
    return _stream
