"""dedup stage: exact, URL and MinHash-LSH near-duplicate removal across all shards."""
