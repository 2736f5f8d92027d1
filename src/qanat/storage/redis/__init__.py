"""Redis storage: ``redis://host:6379/0?prefix=qanat`` (see ``backend.py``)."""

from qanat.storage.redis.backend import LAYOUT, RedisStorage

__all__ = ["LAYOUT", "RedisStorage"]
