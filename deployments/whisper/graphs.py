"""One decoder step over a static KV cache, replayed as a CUDA graph on GPU.

tiny.en's decoder step is ~100 small kernels: on a GPU each token cost ~2.5 ms of launch and
Python overhead whatever the batch size (README, GPU), so the token loop bound the engine.  A
CUDA graph replays the whole step with one launch.  A graph fixes its tensors' shapes and
addresses, so the step reads and writes preallocated buffers: self-attention keys/values for
the full text context (a column per position, unused ones masked), cross-attention keys/values
for 30 s of audio (a shorter, fitted encoder input is masked past its end) and the batch
padded up to a power of two (one graph per size; the padding rows' results are ignored).

On CPU the same step runs eagerly over the same buffers: that is how the tests check that
the static cache decodes exactly what the growing cache does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from deployments.whisper.model import LayerCache, Whisper

log = logging.getLogger(__name__)


@dataclass
class _Buffers:
    tokens: Tensor  # (B, 1) the token fed at this step
    positions: Tensor  # (B, 1) its position id
    column: Tensor  # (1,) the cache column it is written to (the same for every row)
    valid: Tensor  # (B, ctx) which self-attention columns hold real tokens
    cross_valid: Tensor  # (B, 1, 1, audio_ctx) which audio positions are real
    self_k: list[Tensor]  # per layer (B, heads, ctx, head_dim)
    self_v: list[Tensor]
    cross_k: list[Tensor]  # per layer (B, heads, audio_ctx, head_dim)
    cross_v: list[Tensor]


class StaticSteps:
    """Decoder steps for batches of up to ``max_batch`` rows over preallocated buffers.

    :meth:`load` takes the cache the prompt pass built; each :meth:`step` feeds one token
    per row and returns (logits (rows, vocab) float32, alignment-head scores
    (rows, heads, audio positions)), both fresh tensors the caller may keep."""

    def __init__(
        self, model: Whisper, alignment_heads: list[tuple[int, int]], max_batch: int, graphs: bool
    ) -> None:
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.model = model
        self.heads = alignment_heads
        self.max_batch = max_batch
        self.use_graphs = graphs and self.device.type == "cuda"
        d = model.dims
        head_dim = d.n_state // d.n_head

        def zeros(*shape: int, dtype: torch.dtype | None = None) -> Tensor:
            return torch.zeros(*shape, dtype=dtype or self.dtype, device=self.device)

        layers = range(d.n_text_layer)
        self.buf = _Buffers(
            tokens=zeros(max_batch, 1, dtype=torch.long),
            positions=zeros(max_batch, 1, dtype=torch.long),
            column=zeros(1, dtype=torch.long),
            valid=zeros(max_batch, d.n_text_ctx, dtype=torch.bool),
            cross_valid=zeros(max_batch, 1, 1, d.n_audio_ctx, dtype=torch.bool),
            self_k=[zeros(max_batch, d.n_head, d.n_text_ctx, head_dim) for _ in layers],
            self_v=[zeros(max_batch, d.n_head, d.n_text_ctx, head_dim) for _ in layers],
            cross_k=[zeros(max_batch, d.n_head, d.n_audio_ctx, head_dim) for _ in layers],
            cross_v=[zeros(max_batch, d.n_head, d.n_audio_ctx, head_dim) for _ in layers],
        )
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, Tensor, Tensor]] = {}
        self.rows = 0  # rows of the loaded batch
        self.audio = 0  # its audio positions
        self.size = 0  # the padded batch size its steps run at

    def fits(self, rows: int) -> bool:
        return rows <= self.max_batch

    def load(self, cache: list[LayerCache], valid: Tensor) -> None:
        """Take a batch's cache after its prompt pass (``valid``: (rows, width))."""
        rows, width = valid.shape
        audio = cache[0].cross_k.shape[2]
        b = self.buf
        self.rows, self.audio = rows, audio
        self.size = min(self.max_batch, 1 << (rows - 1).bit_length())
        b.valid[:rows].zero_()
        b.valid[:rows, :width] = valid
        b.cross_valid[: self.size].zero_()
        mask = cache[0].cross_mask
        b.cross_valid[: self.size, ..., :audio] = True
        if mask is not None:
            b.cross_valid[:rows, ..., :audio] = mask
        for layer, lc in enumerate(cache):
            assert lc.self_k is not None and lc.self_v is not None
            b.self_k[layer][:rows, :, :width] = lc.self_k
            b.self_v[layer][:rows, :, :width] = lc.self_v
            b.cross_k[layer][:rows, :, :audio] = lc.cross_k
            b.cross_v[layer][:rows, :, :audio] = lc.cross_v

    def step(self, tokens: Tensor, positions: Tensor, column: int) -> tuple[Tensor, Tensor]:
        """Feed ``tokens`` (rows, 1) at ``positions`` (rows, 1), written to cache ``column``."""
        b, rows = self.buf, self.rows
        b.tokens[:rows] = tokens
        b.positions[:rows] = positions
        b.column.fill_(column)
        captured = self._graph(self.size) if self.use_graphs else None
        if captured is not None:
            graph, logits, align = captured
            graph.replay()
        else:
            logits, align = self._forward(self.size)
        return logits[:rows].clone(), align[:rows, :, : self.audio].clone()

    def _forward(self, size: int) -> tuple[Tensor, Tensor]:
        b = self.buf
        decoder = self.model.decoder
        b.valid[:size].index_fill_(1, b.column, True)
        mask = b.valid[:size, None, None, :]
        x = decoder.embed(b.tokens[:size], b.positions[:size])
        qks = []
        for layer, block in enumerate(decoder.blocks):
            h, k, v = block.self_kv(x)  # type: ignore[operator]
            keys, values = b.self_k[layer][:size], b.self_v[layer][:size]
            keys.index_copy_(2, b.column, k)
            values.index_copy_(2, b.column, v)
            cross = (b.cross_k[layer][:size], b.cross_v[layer][:size], b.cross_valid[:size])
            x, qk = block.attend(x, h, keys, values, mask, *cross)  # type: ignore[operator]
            qks.append(qk)
        logits = decoder.logits(x[:, -1]).float()
        align = torch.stack([qks[layer][:, head, -1] for layer, head in self.heads], dim=1)
        return logits, align

    def _graph(self, size: int) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor] | None:
        """The captured step for ``size`` rows (captured on first use: warm-up runs on a side
        stream, as torch.cuda.graphs requires, then the capture); None where capture failed:
        the steps then run eagerly, slower but the same."""
        if size not in self.graphs:
            try:
                self.graphs[size] = self._capture(size)
            except RuntimeError as e:
                log.warning("CUDA graph capture failed (%s): the token loop runs without graphs", e)
                self.use_graphs = False
                return None
        return self.graphs[size]

    def _capture(self, size: int) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor]:
        side = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(self.device))
        # the warm-up runs compute this very step (its inputs are loaded), so what they
        # write to the cache is what the replay writes
        with torch.cuda.stream(side):
            for _ in range(2):
                self._forward(size)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits, align = self._forward(size)
        return graph, logits, align
