"""Tests of anysat_core.analysis."""
