"""What users run: cli (thin commands) over three wings that never import each other: build, serve, cluster."""
