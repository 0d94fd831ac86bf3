"""homeforge's benchmark scripts; run them all with `python -m benchmarks`."""
