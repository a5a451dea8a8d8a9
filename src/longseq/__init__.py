"""longseq: Longformer, BigBird and Reformer for long documents, in one PyTorch codebase."""

from .attention import LSH, BlockSparse, Dense, LocalChunks, SlidingWindow, attend

__version__ = "0.1.0"

__all__ = ["LSH", "BlockSparse", "Dense", "LocalChunks", "SlidingWindow", "__version__", "attend"]
