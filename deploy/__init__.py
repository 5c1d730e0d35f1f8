"""Generators for the deployment's derived files: the Grafana dashboard and the PrometheusRule.

Everything else under ``deploy/`` is plain YAML (kustomize, Prometheus rules, Dockerfiles).
``python -m deploy`` rewrites the generated files; ``python -m deploy --check`` fails when they
are stale (``make deploy-check`` runs it through tests/deploy/).
"""
