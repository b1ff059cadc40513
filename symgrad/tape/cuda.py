"""torch.cuda: there is no GPU here, so scripts that ask take their CPU branch."""

import sys

from . import cuda_amp as amp

# `import symgrad.tape.cuda.amp` then works like `import torch.cuda.amp`.
sys.modules[__name__ + ".amp"] = amp


def is_available():
    return False


def device_count():
    return 0
