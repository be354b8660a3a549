"""Benchmarks (`make bench`): gateway overhead, throughput and memory, measured side by side."""
