"""Profiling: per-stage measurements in each process (`stats`), their aggregation and the live
views in the supervisor (`aggregate`, `profiler`, `live`, `metrics`) and the JSON report (`report`)."""
