"""Orchestration services, free of Prefect: the local server and worker processes (`server`,
`processes`, `workers`), the campaign guard (`guard`), starting and recovering rounds (`rounds`),
approve and reject (`approval`) and `status`, as plain functions over the workspace.

They talk to the workflow engine only through the `engine.RunEngine` contract; its Prefect
implementation, the flows and the tasks are the top-level ``flows/`` and ``tasks/`` packages."""
