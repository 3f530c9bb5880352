"""The MQTT door: events and retained state out, requests in, Home Assistant discovery.

Importing this package loads aiomqtt, so the app imports it only when MQTT is configured.
"""

from ..config import Broker
from .bridge import MqttBridge
from .requests import LOGIN_REFUSED

__all__ = ["LOGIN_REFUSED", "Broker", "MqttBridge"]
