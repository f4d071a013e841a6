"""Data helpers: samples, synthetic batches (datasets land with the data issue)."""
