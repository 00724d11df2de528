"""filter stage: FineWeb/Gopher/C4 heuristics as signals, then decisions."""
