"""The embedding store: an HDF5 file with embeddings, ids and provenance (see format.py)."""

from .format import FORMAT_NAME, FORMAT_VERSION
from .store import EmbeddingStore, StoreWriter, write_store

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "EmbeddingStore", "StoreWriter", "write_store"]
