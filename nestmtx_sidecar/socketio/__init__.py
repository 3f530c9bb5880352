"""The Socket.IO door: bus events to clients' rooms, resumable; requests to the dispatcher."""

from .event_log import EventLog, MemoryLog, RedisStreamLog
from .fanout import FastManager, fast_manager_class
from .gateway import Gateway
from .recovery import MemorySessions, RedisSessions, Sessions

__all__ = ["EventLog", "FastManager", "Gateway", "MemoryLog", "MemorySessions", "RedisSessions",
           "RedisStreamLog", "Sessions", "fast_manager_class"]
