"""Tokenizers for Longformer / BigBird / Reformer model folders, id-for-id equal to Hugging Face's.

tok = Tokenizer.from_pretrained("path/to/model")
batch = tok(questions, contexts, padding=True, truncation=True, max_length=4096, return_tensors="pt")
"""

from .byte_level import ByteTokenizer
from .encoding import BatchEncoding
from .tokenizer import Tokenizer

__all__ = ["BatchEncoding", "ByteTokenizer", "Tokenizer"]
