"""Orchestration services, free of Prefect: the local server and worker processes, the campaign guard,
status, approve, reject and recovery as plain functions over the workspace.

The Prefect flows and tasks that use them are the top-level ``flows/`` and ``tasks/`` packages."""
