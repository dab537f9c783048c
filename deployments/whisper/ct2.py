"""Read a CTranslate2 Whisper ``model.bin`` and map it onto :class:`~.model.Whisper`.

The binary layout (little-endian) is: u32 version; spec name; u32 revision; u32 n_vars;
per variable: name, u8 ndim, u32[ndim] shape, u8 dtype, u32 nbytes, raw bytes; then u32
n_aliases and (alias, target) name pairs.  Strings are u16 length (with NUL) + bytes.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ingest.errors import ModelError

_DTYPES: dict[int, np.dtype[np.generic]] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
}
_LAYER = re.compile(r"layer_(\d+)/")


def _read(f: BinaryIO, fmt: str) -> tuple[int, ...]:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise ModelError("model.bin is truncated")
    return struct.unpack(fmt, data)


def _read_string(f: BinaryIO) -> str:
    (length,) = _read(f, "<H")
    return f.read(length).rstrip(b"\0").decode("utf-8")


def read_ct2_variables(path: Path) -> dict[str, np.ndarray]:
    """Return every variable of a CTranslate2 model file, aliases resolved."""
    variables: dict[str, np.ndarray] = {}
    with path.open("rb") as f:
        (version,) = _read(f, "<I")
        if version < 5:
            raise ModelError(f"unsupported CTranslate2 model version {version}")
        spec = _read_string(f)
        if spec != "WhisperSpec":
            raise ModelError(f"expected a WhisperSpec model, got {spec!r}")
        _read(f, "<I")  # spec revision
        (n_vars,) = _read(f, "<I")
        for _ in range(n_vars):
            name = _read_string(f)
            (ndim,) = _read(f, "<B")
            shape = _read(f, f"<{ndim}I") if ndim else ()
            (code,) = _read(f, "<B")
            (nbytes,) = _read(f, "<I")
            if code not in _DTYPES:
                raise ModelError(f"variable {name}: unsupported dtype code {code}")
            raw = f.read(nbytes)
            variables[name] = np.frombuffer(raw, dtype=_DTYPES[code]).reshape(shape)
        (n_aliases,) = _read(f, "<I")
        for _ in range(n_aliases):
            alias = _read_string(f)
            variables[alias] = variables[_read_string(f)]
    return variables


def count_layers(variables: dict[str, np.ndarray], prefix: str) -> int:
    indices = {int(m.group(1)) for n in variables if n.startswith(prefix) and (m := _LAYER.search(n))}
    return max(indices) + 1


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.float32))


def _linear(out: dict[str, torch.Tensor], dst: str, v: dict[str, np.ndarray], src: str) -> None:
    out[f"{dst}.weight"] = _t(v[f"{src}/weight"])
    if f"{src}/bias" in v:
        out[f"{dst}.bias"] = _t(v[f"{src}/bias"])


def _norm(out: dict[str, torch.Tensor], dst: str, v: dict[str, np.ndarray], src: str) -> None:
    out[f"{dst}.weight"] = _t(v[f"{src}/gamma"])
    out[f"{dst}.bias"] = _t(v[f"{src}/beta"])


def _split_linear(out: dict[str, torch.Tensor], dsts: list[str], v: dict[str, np.ndarray], src: str) -> None:
    weights = np.split(v[f"{src}/weight"], len(dsts), axis=0)
    biases = np.split(v[f"{src}/bias"], len(dsts), axis=0)
    for dst, w, b in zip(dsts, weights, biases, strict=True):
        out[f"{dst}.weight"] = _t(w)
        if not dst.endswith(".key"):  # Whisper's key projection has no bias (stored as zeros)
            out[f"{dst}.bias"] = _t(b)


def _block(out: dict[str, torch.Tensor], dst: str, v: dict[str, np.ndarray], src: str) -> None:
    _split_linear(
        out,
        [f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"],
        v,
        f"{src}/self_attention/linear_0",
    )
    _linear(out, f"{dst}.attn.out", v, f"{src}/self_attention/linear_1")
    _norm(out, f"{dst}.attn_ln", v, f"{src}/self_attention/layer_norm")
    if f"{src}/attention/linear_0/weight" in v:
        _linear(out, f"{dst}.cross_attn.query", v, f"{src}/attention/linear_0")
        _split_linear(
            out, [f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"], v, f"{src}/attention/linear_1"
        )
        _linear(out, f"{dst}.cross_attn.out", v, f"{src}/attention/linear_2")
        _norm(out, f"{dst}.cross_attn_ln", v, f"{src}/attention/layer_norm")
    _linear(out, f"{dst}.mlp.fc1", v, f"{src}/ffn/linear_0")
    _linear(out, f"{dst}.mlp.fc2", v, f"{src}/ffn/linear_1")
    _norm(out, f"{dst}.mlp_ln", v, f"{src}/ffn/layer_norm")


def to_state_dict(v: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map CTranslate2 variable names to the parameter names of :class:`~.model.Whisper`."""
    out: dict[str, torch.Tensor] = {}
    _linear(out, "encoder.conv1", v, "encoder/conv1")
    _linear(out, "encoder.conv2", v, "encoder/conv2")
    out["encoder.positional_embedding"] = _t(v["encoder/position_encodings/encodings"])
    for i in range(count_layers(v, "encoder/")):
        _block(out, f"encoder.blocks.{i}", v, f"encoder/layer_{i}")
    _norm(out, "encoder.ln_post", v, "encoder/layer_norm")
    out["decoder.token_embedding.weight"] = _t(v["decoder/embeddings/weight"])
    out["decoder.positional_embedding"] = _t(v["decoder/position_encodings/encodings"])
    for i in range(count_layers(v, "decoder/")):
        _block(out, f"decoder.blocks.{i}", v, f"decoder/layer_{i}")
    _norm(out, "decoder.ln", v, "decoder/layer_norm")
    return out
