"""The embedding store: an HDF5 file with embeddings, ids and provenance (see format.py)."""

from .checks import check_same_space, describe_space, require_finite
from .format import FORMAT_NAME, FORMAT_VERSION
from .store import EmbeddingStore, StoreWriter, write_store
from .union import StoreUnion, open_stores

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "EmbeddingStore", "StoreUnion", "StoreWriter", "open_stores",
    "check_same_space", "describe_space", "require_finite", "write_store",
]
