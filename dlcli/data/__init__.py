"""Data sources. Each turns a path into encoded tensors plus an preprocessor (plain data, saved in the
model file) that re-applies the same preprocessing to new raw inputs. See `sources.py`."""
