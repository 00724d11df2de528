"""What an export writes: the options of ``fineflow export`` and of a pipeline's ``export:`` block."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from fineflow.stage_config import NAME_PATTERN, Strict

MIN_SHARD_BYTES = 1024  # below this a shard is mostly Parquet footer
MAX_SHARD_BYTES = 50 * 1000**3  # the Hugging Face Hub refuses files over 50 GB
DEFAULT_SHARD_BYTES = 512 * 1024**2  # the size of most released Parquet shards (FineWeb's are ~0.5-2 GB)
NO_CONFIGS = "none"  # config_by: one ``default`` config
_LICENSE = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")  # the Hub's licence identifiers: apache-2.0, odc-by, cc-by-4.0, other ...


class ExportOptions(Strict):
    to: str = Field(
        default="release",
        description="the folder (local path or s3:// URL) to write; a relative path in a pipeline's export: block "
        "is inside its storage root",
    )
    stage: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="the stage whose documents are exported (default: the run's last)"
    )
    config_by: str = Field(
        default="language",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(,[A-Za-z_][A-Za-z0-9_]*)*$",
        description=f"a column (text, integer or boolean): one dataset config per value; several, comma-separated (or a "
        f"list): one per combination, e.g. quality_level,kind -> quality_level-2.kind-synthetic ('{NO_CONFIGS}': one config "
        "named default)",
    )
    license: str = Field(default="unknown", description="the dataset card's licence (a Hub identifier, e.g. odc-by)")
    columns: list[str] | None = Field(
        default=None, min_length=1, description="the columns to write (default: FineWeb's, then fineflow's provenance)"
    )
    shard_bytes: int = Field(
        default=DEFAULT_SHARD_BYTES, ge=MIN_SHARD_BYTES, le=MAX_SHARD_BYTES, description="target size of a Parquet shard"
    )
    shard_rows: int | None = Field(default=None, ge=1, le=10**9, description="at most this many documents per shard")
    pretty_name: str | None = Field(default=None, max_length=200, description="the card's title (default: the pipeline's name)")

    @field_validator("config_by", mode="before")
    @classmethod
    def _columns_list(cls, value: object) -> object:
        if isinstance(value, list):
            if len(set(value)) != len(value):
                raise ValueError("config_by: a column is named twice")
            return ",".join(str(v) for v in value)
        return value

    @field_validator("license")
    @classmethod
    def _license(cls, value: str) -> str:
        if not _LICENSE.match(value):
            raise ValueError(f"{value!r} is not a licence identifier (lower case, e.g. odc-by, cc-by-4.0, other)")
        return value

    @field_validator("columns")
    @classmethod
    def _columns(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("a column is named twice")
        return value
