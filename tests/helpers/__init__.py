"""Helpers shared by the tests (synthetic scenes, fake dataset roots, models)."""
