"""Prefect flows: thin orchestration of the stage logic in fineflow.tasks."""
