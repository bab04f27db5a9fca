"""absl entry points: `python -m launch.train`, `launch.prepare_data`, ..."""
