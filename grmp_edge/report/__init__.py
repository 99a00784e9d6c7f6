"""Reports: accuracy-vs-latency benchmarks, tables and plots."""
