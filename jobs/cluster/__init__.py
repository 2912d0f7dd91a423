"""The cluster wing: submitting builds to a Ray cluster (Jobs API)."""
