"""Suite-wide settings.

One torch thread: on a shared 2-core machine a second intra-op thread mostly waits on other
processes, which made the suite ~4x slower; results do not depend on the thread count.
"""

import torch

torch.set_num_threads(1)
