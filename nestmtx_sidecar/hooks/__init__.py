"""The MediaMTX hook door: hook calls in, deduplicated and spooled, camera events out."""

from .receiver import HookReceiver

__all__ = ["HookReceiver"]
