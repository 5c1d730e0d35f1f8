"""Model lifecycle: MLflow Model Registry → Triton replicas → a live experiment variant.

`python -m registry` registers, deploys, ramps, promotes and rolls back versions of a Triton
python-backend model. The registry is never on the request path: the gateway serves from
Triton and its own router whatever MLflow or PostgreSQL do. See registry/README.md.
"""

from registry.errors import BadInput, LifecycleError, NotFound, RegistryUnavailable, RolloutRefused

__all__ = ["BadInput", "LifecycleError", "NotFound", "RegistryUnavailable", "RolloutRefused"]
