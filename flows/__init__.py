"""Prefect flows of activeseg and the code that runs them (see flows/README.md)."""
