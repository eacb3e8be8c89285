"""The model registry: version metadata in SQL, artifacts on disk, a cache of loaded models."""
