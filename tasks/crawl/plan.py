"""Plan the crawl stage: resolve inputs, fingerprint them, split them into shards."""

from __future__ import annotations

from fineflow import storage
from fineflow.fingerprint import file_content_hash, library_versions
from fineflow.preflight import check_storage
from fineflow.steps import PlanContext, StepPlan
from fineflow.tasks.crawl import stage
from fineflow.tasks.crawl.config import CrawlStage
from fineflow.tasks.crawl.inputs import (
    InputError,
    describe_files,
    describe_inputs,
    expand_inputs,
    input_warnings,
    listing_paths,
    plan_shards,
)
from fineflow.tasks.text import langid

# Parameters that change what the step produces; all of them enter the fingerprint.
_PARAMS = (
    "extractor",
    "extraction_timeout_s",
    "include_text_plain",
    "keep_truncated",
    "max_record_bytes",
    "langid_model",
    "url_filter",
    "url_filter_options",
    "shard_bytes",
)


def _bucket(url: str) -> str:
    protocol, rest = url.split("://", 1)
    return f"{protocol}://{rest.split('/', 1)[0]}"


def preflight_crawl(config: CrawlStage) -> list[str]:
    """Cheap checks before any work (listings and sizes, no content read): raises ``InputError``
    for what makes the run impossible, returns warnings for what it would only report."""
    try:
        langid.resolve_model_path(config.langid_model)
    except FileNotFoundError as error:
        raise InputError(f"langid_model: {error}") from None
    # Remote inputs: credentials and endpoint first, for a clear error instead of a listing's traceback.
    for bucket in sorted({_bucket(pattern) for pattern in config.inputs if "://" in pattern}):
        check_storage(bucket, "inputs")
    if config.listing is not None and "://" in config.listing.path:
        check_storage(_bucket(config.listing.path), "listing.path")
    if config.listing is not None:
        return []
    files, warnings = expand_inputs(config.inputs)
    return warnings + [f"inputs: {url} is empty" for url in files if storage.size(url) == 0]


def content_inputs(config: CrawlStage) -> list[str]:
    """The files whose content hashes ``plan_crawl`` reads (a listing's files are named by path and size)."""
    return [] if config.listing is not None else expand_inputs(config.inputs)[0]


def plan_crawl(config: CrawlStage, ctx: PlanContext) -> list[StepPlan]:
    root = ctx.root
    warnings: list[str] = []
    if config.listing is not None:
        listing = config.listing
        files = listing_paths(listing.path, listing.base_url, listing.limit, listing.sample, listing.seed)
        # Common Crawl files never change under their name: path and size identify them; the
        # listing's own content hash covers which files were chosen.
        described = describe_files(files, memo_root=root, content_hash=False)
        inputs = {"listing": file_content_hash(listing.path, root), "files": described}
    else:
        files, warnings = expand_inputs(config.inputs)
        described = describe_files(files, memo_root=root, content_hash=True)
        inputs = {"files": described}
    params = {name: getattr(config, name) for name in _PARAMS}
    resources = {"langid_model": langid.model_hash(config.langid_model)}
    if config.extractor == "justext":  # its version only where it extracts: other crawls keep their fingerprints
        resources["justext"] = library_versions(["justext"])["justext"]
    if config.url_filter:
        for key, value in sorted(config.url_filter_options.items()):
            if isinstance(value, str) and key.endswith("_file"):
                resources[f"url_filter.{key}"] = file_content_hash(value)["blake2b"]
    return [
        ctx.step(
            stage,
            "extract_shard",
            step="extract",
            params=params,
            chained=inputs,
            shards=plan_shards(described, config.shard_bytes),
            resources=resources,
            warnings=tuple(warnings + input_warnings(described)),
            inputs=describe_inputs(described, config.shard_bytes),
            checks="fineflow.tasks.crawl.stage:file_warnings",
            warm=((f"{langid.__name__}:load_model", config.langid_model),),
        )
    ]
