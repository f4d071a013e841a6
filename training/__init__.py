"""Pretraining, probing and fine-tuning of AnySat with Lightning; lands with the training issue."""
