"""Data: built-in long-range tasks (ListOps, far retrieval) and loaders for user files.

Both tasks give ``(input_ids, label)`` samples with ``[CLS]`` (id 1) at position 0 and pad with id 0;
:func:`collate` pads a batch and returns ``input_ids``, ``attention_mask`` and ``labels``.
"""

from longseq.data import files, listops, retrieval
from longseq.data.common import Packed, SequenceDataset, collate, default_cache_dir
from longseq.data.files import load_classification, load_squad, load_text
from longseq.data.vocab import CLS_ID, PAD_ID, Vocab

__all__ = [
    "CLS_ID",
    "PAD_ID",
    "Packed",
    "SequenceDataset",
    "Vocab",
    "collate",
    "default_cache_dir",
    "files",
    "listops",
    "load_classification",
    "load_squad",
    "load_text",
    "retrieval",
]
