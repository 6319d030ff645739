"""One module per pipeline stage; each exposes `run(ctx: pipeline.dag.StageContext) -> dict | None`."""
