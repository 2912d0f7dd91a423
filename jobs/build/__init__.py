"""The build wing: one `structome build` (job), its Ray runner, manifest and settings."""
