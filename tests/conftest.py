import os

# Triton kernels run under its interpreter on CPU; the flag must be set before anything imports triton.
os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

# Two cores in CI: more threads only adds contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))
