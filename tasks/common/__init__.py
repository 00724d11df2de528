"""What stages share that is not text: how a document's cell (its key columns' values) is named,
so the rebalance stage's cells and the tokenize stage's token-file partitions are the same."""
