"""Evaluation: honest numbers for a trained run (``evaluate``), the classifier that scores
samples (``classifier``) and sweeps of one setting (``sweep``)."""
