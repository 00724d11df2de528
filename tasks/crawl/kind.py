"""The crawl stage kind: WARC/WET files (local, S3, a Common Crawl listing) to documents."""

from fineflow.registry import StageKind
from fineflow.tasks.crawl.config import CrawlStage

KIND = StageKind(
    kind="crawl",
    config=CrawlStage,
    planner="fineflow.tasks.crawl.plan:plan_crawl",
    document_step="extract",
    reads_documents=False,
    description="Crawl WARC/WET files into documents.",
    preflight="fineflow.tasks.crawl.plan:preflight_crawl",
    content_inputs="fineflow.tasks.crawl.plan:content_inputs",
)
