"""longseq: Longformer, BigBird and Reformer for long documents, in one PyTorch codebase."""

from .attention import LSH, BlockSparse, Dense, LocalChunks, SlidingWindow, attend
from .models import *  # noqa: F403
from .models import __all__ as _models
from .tokenization import Tokenizer

__version__ = "0.1.0"

__all__ = [
    "LSH",
    "BlockSparse",
    "Dense",
    "LocalChunks",
    "SlidingWindow",
    "Tokenizer",
    "__version__",
    "attend",
    *_models,
]
