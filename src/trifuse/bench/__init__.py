"""Benchmark harness: every op against torch eager, torch.compile and peers, in the same run."""
