"""The runtime side: the per-target loop, jobs, results and gallery. Never imports torch."""
