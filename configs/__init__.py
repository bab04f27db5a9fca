"""Experiment configs: one `get_config()` per file, returning an `ml_collections.ConfigDict`."""
