"""Service settings, from the environment (prefix ``DISTILSEARCH_``) via pydantic-settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Settings of the HTTP service. No global instance: `create_app` takes one."""

    model_config = SettingsConfigDict(env_prefix="DISTILSEARCH_", extra="ignore")

    index_dir: Path = Field(description="Index folder to serve.")
    model: str | None = Field(None, description="Query encoder; default: the index's model.")
    backend: str = Field("auto", description="auto|torch|onnx|onnx-int8")
    host: str = "127.0.0.1"
    port: int = 8000
    max_k: int = Field(100, ge=1, description="Largest k a request may ask for.")
    max_query_chars: int = Field(2000, ge=1, description="Longest query accepted.")
