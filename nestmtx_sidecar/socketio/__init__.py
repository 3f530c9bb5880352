"""The Socket.IO door: bus events to clients' rooms, resumable; requests to the dispatcher."""

from .door import SocketIoDoor
from .event_log import EventLog, MemoryLog, RedisStreamLog
from .fanout import FastManager, fast_manager_class
from .recovery import MemorySessions, RedisSessions, Sessions

__all__ = [
           "EventLog",
           "FastManager",
           "MemoryLog",
           "MemorySessions",
           "RedisSessions",
           "RedisStreamLog",
           "Sessions",
           "SocketIoDoor",
           "fast_manager_class",
]
