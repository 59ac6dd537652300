"""Base models: the tiny offline Qwen2 for CPU runs and tests, and downloads from ModelScope."""
