"""Whisper encoder/decoder in PyTorch with an explicit, batch-friendly KV cache.

The decoder takes per-row position ids and a key-validity mask so that rows with prompts of
different lengths can be decoded together (left padding).  Cross-attention is computed by hand
so the raw query-key scores of the alignment heads are available for word timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class Dims:
    n_mels: int = 80
    n_audio_ctx: int = 1500
    n_state: int = 384
    n_head: int = 6
    n_audio_layer: int = 4
    n_vocab: int = 51864
    n_text_ctx: int = 448
    n_text_layer: int = 4


class Attention(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def heads(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        return x.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)

    def merge(self, x: Tensor) -> Tensor:
        b, h, t, d = x.shape
        return x.transpose(1, 2).reshape(b, t, h * d)


class MLP(nn.Module):
    def __init__(self, n_state: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_state, 4 * n_state)
        self.fc2 = nn.Linear(4 * n_state, n_state)

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.fc2(F.gelu(self.fc1(x)))
        return y


class EncoderBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.attn = Attention(n_state, n_head)
        self.attn_ln = nn.LayerNorm(n_state)
        self.mlp = MLP(n_state)
        self.mlp_ln = nn.LayerNorm(n_state)

    def forward(self, x: Tensor) -> Tensor:
        h = self.attn_ln(x)
        a = self.attn
        q, k, v = (a.heads(p(h)).to(x.dtype) for p in (a.query, a.key, a.value))
        with _exact(x):
            y = F.scaled_dot_product_attention(q, k, v)
        x = x + a.out(a.merge(y))
        out: Tensor = x + self.mlp(self.mlp_ln(x))
        return out


def _exact(x: Tensor) -> torch.autocast:
    """Autocast off: under the CPU's bfloat16 autocast (``cpu_bf16_encoder``) only the
    linear layers run in bfloat16; the stem over the log-mel and the attention stay in the
    model's dtype (with them in bfloat16 too, streaming WER on the short clips rose 0.5
    points, on the misc source 11: README, Benchmarks, stop 24)."""
    return torch.autocast(x.device.type, enabled=False)


class Encoder(nn.Module):
    def __init__(self, d: Dims) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(d.n_mels, d.n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d.n_state, d.n_state, kernel_size=3, stride=2, padding=1)
        self.positional_embedding = nn.Parameter(torch.empty(d.n_audio_ctx, d.n_state))
        self.blocks = nn.ModuleList(EncoderBlock(d.n_state, d.n_head) for _ in range(d.n_audio_layer))
        self.ln_post = nn.LayerNorm(d.n_state)

    def forward(self, mel: Tensor) -> Tensor:
        """mel: (batch, n_mels, 3000) -> (batch, 1500, n_state)."""
        with _exact(mel):
            x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        x = x + self.positional_embedding[: x.shape[1]]
        for block in self.blocks:
            x = block(x)
        y: Tensor = self.ln_post(x)
        return y


@dataclass
class LayerCache:
    """Self-attention keys/values so far, and the fixed cross-attention keys/values."""

    cross_k: Tensor
    cross_v: Tensor
    # (B, 1, 1, audio_ctx): which audio positions a row attends to, where rows were encoded
    # at different widths and padded to the widest (None: every position)
    cross_mask: Tensor | None = None
    self_k: Tensor | None = None
    self_v: Tensor | None = None


class DecoderBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.attn = Attention(n_state, n_head)
        self.attn_ln = nn.LayerNorm(n_state)
        self.cross_attn = Attention(n_state, n_head)
        self.cross_attn_ln = nn.LayerNorm(n_state)
        self.mlp = MLP(n_state)
        self.mlp_ln = nn.LayerNorm(n_state)

    def cross_cache(self, audio: Tensor, mask: Tensor | None = None) -> LayerCache:
        c = self.cross_attn
        # contiguous once here: as strided views every token step's two matmuls copied them
        # (B x audio_ctx x state floats per layer, twice per step)
        return LayerCache(c.heads(c.key(audio)).contiguous(), c.heads(c.value(audio)).contiguous(), mask)

    def self_kv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The normalised input and the new tokens' self-attention keys and values."""
        a = self.attn
        h = self.attn_ln(x)
        return h, a.heads(a.key(h)), a.heads(a.value(h))

    def attend(
        self,
        x: Tensor,
        h: Tensor,
        k: Tensor,
        v: Tensor,
        self_mask: Tensor,
        cross_k: Tensor,
        cross_v: Tensor,
        cross_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The block's output given all self keys/values ``k``/``v`` (cached + new), and the raw
        cross-attention qk; ``cross_mask`` hides padded audio positions (static cache only)."""
        a = self.attn
        y = F.scaled_dot_product_attention(a.heads(a.query(h)), k, v, attn_mask=self_mask)
        x = x + a.out(a.merge(y))
        c = self.cross_attn
        q = c.heads(c.query(self.cross_attn_ln(x)))
        qk = (q @ cross_k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
        scores = qk if cross_mask is None else qk.masked_fill(~cross_mask, -torch.inf)
        x = x + c.out(c.merge(scores.softmax(dim=-1) @ cross_v))
        return x + self.mlp(self.mlp_ln(x)), qk

    def forward(self, x: Tensor, cache: LayerCache, self_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Run one block on new tokens; append to ``cache``; return (x, cross-attention qk)."""
        h, k, v = self.self_kv(x)
        if cache.self_k is not None and cache.self_v is not None:
            k, v = torch.cat([cache.self_k, k], dim=2), torch.cat([cache.self_v, v], dim=2)
        cache.self_k, cache.self_v = k, v
        return self.attend(x, h, k, v, self_mask, cache.cross_k, cache.cross_v, cache.cross_mask)


class Decoder(nn.Module):
    def __init__(self, d: Dims) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(d.n_vocab, d.n_state)
        self.positional_embedding = nn.Parameter(torch.empty(d.n_text_ctx, d.n_state))
        self.blocks = nn.ModuleList(DecoderBlock(d.n_state, d.n_head) for _ in range(d.n_text_layer))
        self.ln = nn.LayerNorm(d.n_state)
        # set by :func:`quantize_int8`: an int8 copy of the tied output projection
        self.projection: nn.Module | None = None

    def new_cache(self, audio: Tensor, audio_valid: Tensor | None = None) -> list[LayerCache]:
        """``audio_valid`` (B, audio_ctx): the real positions of rows encoded at different
        widths and padded to the widest."""
        mask = None if audio_valid is None else audio_valid[:, None, None, :]
        return [block.cross_cache(audio, mask) for block in self.blocks]  # type: ignore[operator]

    def forward(
        self, tokens: Tensor, positions: Tensor, valid: Tensor, cache: list[LayerCache]
    ) -> tuple[Tensor, list[Tensor]]:
        """Decode new ``tokens`` (B, T) at ``positions`` (B, T).

        ``valid`` (B, T_total) marks which cached+new key positions are real tokens (False for
        left padding).  Returns the final hidden states (B, T, state) - turn the ones you need
        into logits with :meth:`logits` - and each layer's cross-attention qk
        (B, heads, T, audio_ctx).
        """
        t_new, t_all = tokens.shape[1], valid.shape[1]
        offset = t_all - t_new
        causal = torch.ones(t_new, t_all, dtype=torch.bool, device=tokens.device).tril(offset)
        mask = causal[None] & valid[:, None, :]
        # A padding row may see no valid key at all: let every row see itself to stay finite.
        eye = torch.zeros_like(causal)
        eye[:, offset:] = torch.eye(t_new, dtype=torch.bool, device=tokens.device)
        mask = (mask | eye[None])[:, None]
        x = self.embed(tokens, positions)
        qks = []
        for block, layer_cache in zip(self.blocks, cache, strict=True):
            x, qk = block(x, layer_cache, mask)
            qks.append(qk)
        return x, qks

    def embed(self, tokens: Tensor, positions: Tensor) -> Tensor:
        out: Tensor = self.token_embedding(tokens) + self.positional_embedding[positions]
        return out

    def logits(self, hidden: Tensor) -> Tensor:
        """Hidden states (..., state) -> vocabulary logits (tied output projection)."""
        if self.projection is not None:
            projected: Tensor = self.projection(self.ln(hidden))
            return projected
        out: Tensor = self.ln(hidden) @ self.token_embedding.weight.T
        return out


class Whisper(nn.Module):
    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.dims = dims
        self.encoder = Encoder(dims)
        self.decoder = Decoder(dims)


def quantize_int8(model: Whisper) -> Whisper:
    """Dynamic int8 quantization of the tied output projection for CPU: the vocabulary matmul
    (51864 x 384) is the largest weight read per decoded token (7.7 -> 0.85 ms per token on 2
    cores).  The other linear layers stay float32: quantizing them saved little (encoder 0.31
    -> 0.29 s per 30 s window) and, for one token at a time, costs more than it saves."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    decoder = model.decoder
    projection = nn.Linear(model.dims.n_state, model.dims.n_vocab, bias=False)
    projection.weight = nn.Parameter(decoder.token_embedding.weight.detach().clone())
    with warnings.catch_warnings():
        # torch.ao's eager quantization warns that it moves to torchao; it works in 2.13
        warnings.simplefilter("ignore")
        quantized = quantize_dynamic(nn.Sequential(projection), {nn.Linear}, dtype=torch.qint8)  # type: ignore[no-untyped-call]
    decoder.projection = quantized
    return model
