"""Stage logic: pure functions over one shard (no Prefect, no Dask imports)."""
