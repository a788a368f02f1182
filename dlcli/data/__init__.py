"""Data kinds (table, image folder, text, series): each turns a path into raw tensors plus a fitted
preprocessor (plain data, saved in the model file) that re-applies the same preprocessing to new
inputs. The contracts are in `contracts.py`, the registry of kinds in `kinds.py`, table formats in
`readers/`. See docs/data-kinds.md."""
