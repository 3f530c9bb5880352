"""The HTTP door: the request API on /api/*, its error replies and its OpenAPI document."""

from .api import HttpApi, IgnoreTrailingSlash, http_error, server_error

__all__ = ["HttpApi", "IgnoreTrailingSlash", "http_error", "server_error"]
