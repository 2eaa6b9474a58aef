"""Core: settings, datasets, the patch partition, label state, the training pool and synthetic data.

Imports nothing else of activeseg; every other layer builds on it."""
