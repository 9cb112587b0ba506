"""Parameter models of the strategies (torch-free, so listing stays cheap)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ChannelParameters(BaseModel):
    """Options of the channel-norm strategies."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    norm: Literal["l1", "l2"] = Field("l1", description="Norm scoring each output channel.")
