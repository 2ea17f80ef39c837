"""Evaluation: scoring (the Levin et al. protocol), Levin's data set, synthetic data with ground
truth and the bundled sample. Used by the benchmarks, the tests and the ``demo`` command; the
engine never imports it."""
