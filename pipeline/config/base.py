"""What every config section shares: strict models (unknown keys are errors) and the error type."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def unit_interval(default: float, description: str | None = None) -> Any:
    """A config field holding a fraction or probability, in [0, 1]."""
    return Field(default, ge=0.0, le=1.0, description=description)


class ConfigError(ValueError):
    """The config file is invalid; the message names the file and the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
