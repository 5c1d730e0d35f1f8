"""Five Kubeflow pipelines (kfp v2) that run the sprint end to end: features, train,
synthetic, rollout, ab-report. ``python -m pipelines --help``; see pipelines/README.md."""
