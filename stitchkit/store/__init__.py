"""The embedding store: an HDF5 file with embeddings, ids and provenance (see format.py)."""

from .checks import check_same_space, describe_space, require_finite
from .format import FORMAT_NAME, FORMAT_VERSION
from .store import EmbeddingStore, HDF5Header, StoreWriter, read_attr, read_hdf5_header, write_store
from .union import StoreUnion, open_stores

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "EmbeddingStore", "HDF5Header", "StoreUnion", "StoreWriter",
    "open_stores", "check_same_space", "describe_space", "read_attr", "read_hdf5_header",
    "require_finite", "write_store",
]
