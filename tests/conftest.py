import os

import torch

# Two cores in CI: more threads only adds contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))
