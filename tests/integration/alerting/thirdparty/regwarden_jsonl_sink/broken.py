"""A plugin module whose import fails, as one with a missing dependency does."""

raise ImportError("regwarden-jsonl-sink: libexample is not installed")
