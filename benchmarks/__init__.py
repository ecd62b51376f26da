"""Benchmarks of kdsl against PyTorch: `python -m benchmarks`, `benchmarks/train_step.py`, `benchmarks/accuracy.py`."""
