"""Tests of the training package (pretraining, masks, data, downstream)."""
