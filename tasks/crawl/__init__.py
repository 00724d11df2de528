"""crawl stage: WARC/WET ingest, HTML text extraction, language ID."""
