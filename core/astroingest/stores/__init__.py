"""Object stores: the contract, and the embedded local store."""

from astroingest.stores._base import ObjectInfo, ObjectWriter, Store, StoreType

__all__ = ["ObjectInfo", "ObjectWriter", "Store", "StoreType"]
