"""What a reader hands the gateway: one FeatureRow per entity, and the reader protocol."""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = ["FeatureRow", "OnlineFeatureReader", "EntityValue"]

EntityValue = int | str


class FeatureRow:
    """The feature vector for one entity, with flags saying where defaults were used.

    ``values`` is float32 of shape ``[width]`` in the reader's ``names`` order.
    ``null_count`` counts features that were null (or absent) and replaced by their default;
    ``missing_entity`` is True when the store had no row for the entity at all;
    ``defaulted`` is True when the store was unreachable and the failure policy
    returned defaults instead of raising.
    """

    __slots__ = ("values", "missing_entity", "null_count", "defaulted")

    def __init__(
        self,
        values: np.ndarray,
        missing_entity: bool = False,
        null_count: int = 0,
        defaulted: bool = False,
    ) -> None:
        self.values = values
        self.missing_entity = missing_entity
        self.null_count = null_count
        self.defaulted = defaulted

    def __repr__(self) -> str:
        flags = []
        if self.missing_entity:
            flags.append("missing_entity")
        if self.null_count:
            flags.append(f"nulls={self.null_count}")
        if self.defaulted:
            flags.append("defaulted")
        return f"<FeatureRow width={self.values.shape[0]} [{' '.join(flags) or 'ok'}]>"


@runtime_checkable
class OnlineFeatureReader(Protocol):
    """What the gateway needs from a feature reader, whichever store is behind it."""

    width: int
    names: tuple[str, ...]
    entity_keys: tuple[str, ...]
    reads: int

    async def get(self, entity: Mapping[str, EntityValue]) -> FeatureRow:
        """One entity's row; concurrent calls in one loop turn share one store read."""
        ...

    async def get_many(self, entities: Sequence[Mapping[str, EntityValue]]) -> list[FeatureRow]:
        """Rows for several entities, in order, in one store read."""
        ...

    async def close(self) -> None:
        ...
