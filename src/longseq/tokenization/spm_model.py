"""Read a SentencePiece ``.model`` file without protobuf.

The file is a serialized ``ModelProto`` (sentencepiece_model.proto). We decode the protobuf wire format
by hand and keep the fields tokenizer conversion needs: the pieces with scores and types, the trainer's
model type and special ids, and the normalizer's precompiled charsmap.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

# SentencePiece.Type values (sentencepiece_model.proto)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
UNIGRAM, BPE = 1, 2  # TrainerSpec.ModelType


@dataclass
class SpmModel:
    pieces: list[tuple[str, float, int]]  # (piece, score, type)
    model_type: int = UNIGRAM
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    byte_fallback: bool = False
    precompiled_charsmap: bytes = b""
    extra: dict[str, object] = field(default_factory=dict)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """Yield (field_number, wire_type, value) for one protobuf message; value is int or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} in SentencePiece model")
        yield number, wire, value


def _signed(value: int) -> int:
    """int32 fields are encoded as 64-bit two's complement when negative."""
    return value - (1 << 64) if value >= 1 << 63 else value


def read_spm_model(path: str | Path) -> SpmModel:
    """Parse a SentencePiece model file into an ``SpmModel``."""
    data = Path(path).read_bytes()
    model = SpmModel(pieces=[])
    for number, _, value in _fields(data):
        if number == 1:  # repeated SentencePiece pieces
            piece, score, kind = "", 0.0, NORMAL
            for n, _, v in _fields(value):
                if n == 1:
                    piece = v.decode("utf-8")
                elif n == 2:
                    score = struct.unpack("<f", v)[0]
                elif n == 3:
                    kind = v
            model.pieces.append((piece, score, kind))
        elif number == 2:  # TrainerSpec
            for n, _, v in _fields(value):
                if n == 3:
                    model.model_type = v
                elif n == 35:
                    model.byte_fallback = bool(v)
                elif n == 40:
                    model.unk_id = _signed(v)
                elif n == 41:
                    model.bos_id = _signed(v)
                elif n == 42:
                    model.eos_id = _signed(v)
                elif n == 43:
                    model.pad_id = _signed(v)
        elif number == 3:  # NormalizerSpec
            for n, _, v in _fields(value):
                if n == 2:
                    model.precompiled_charsmap = bytes(v)
    if not model.pieces:
        raise ValueError(f"{path} holds no SentencePiece pieces; is it a SentencePiece .model file?")
    return model
