"""homeforge: train small language models on the CPUs you already have.

>>> import homeforge
>>> homeforge.get_num_threads() >= 1
True
"""

from __future__ import annotations

from . import _libs  # noqa: F401  (loads oneDNN/oneTBB before the extension)
from . import _core, ops
from .runtime import get_num_threads, runtime_info, set_num_threads
from .config import RunConfig
from .data import TokenLoader
from .trainer import Trainer
from . import optim
from .model import Model, ModelConfig
from .tokenizer import Tokenizer
from . import distributed

__version__: str = _core.__version__

__all__ = [
    "__version__",
    "ops",
    "runtime_info",
    "set_num_threads",
    "get_num_threads",
    "RunConfig",
    "TokenLoader",
    "Trainer",
    "optim",
    "Model",
    "ModelConfig",
    "Tokenizer",
    "distributed",
]
