"""Cloud Pub/Sub over REST with a credential's own access token: set-up, pull, acknowledge.

REST over the httpx client SDM uses, not google-cloud-pubsub: that library brings gRPC and a
second auth stack for the five calls needed here. Google's errors come back as GoogleError
(one place reads Google's error answers: sdm.error_from_response).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

from ...errors import GoogleAlreadyExists, GoogleApiError, GoogleError, GoogleUnreachable
from ...modules.credential_pubsub import PUBLISHER_ROLE, SDM_PUBLISHER
from .json_body import json_object
from .sdm import TokenSource, error_from_response

logger = logging.getLogger(__name__)

# Google holds an empty pull open for a while (long poll); the client waits longer than that.
PULL_TIMEOUT = 120.0
CALL_TIMEOUT = 30.0
# Handling a batch (parse, one insert and one publish per event) takes well under this.
ACK_DEADLINE_SECONDS = 60
MAX_MESSAGES = 100
# setIamPolicy answers ABORTED when the policy changed since it was read: read it again.
POLICY_ATTEMPTS = 3


@dataclass(frozen=True)
class Received:
    """One pulled message: what acknowledges it, and its base64 data."""

    ack_id: str
    message_id: str
    data: str


class PubSubClient:
    def __init__(self, base_url: str, tokens: TokenSource, http: httpx.AsyncClient) -> None:
        self._base = base_url.rstrip("/")
        self._tokens = tokens
        self._http = http

    async def set_up(self, credential_id: int, topic: str, subscription: str) -> None:
        """The topic, Google's publisher grant on it (verified) and the pull subscription."""
        if not await self._create(credential_id, topic, {}):
            logger.info("credential %d: Pub/Sub topic %s exists", credential_id, topic)
        await self._grant_publisher(credential_id, topic)
        if not await self._create(credential_id, subscription,
                                  {"topic": topic, "ackDeadlineSeconds": ACK_DEADLINE_SECONDS}):
            logger.info("credential %d: Pub/Sub subscription %s exists", credential_id,
                        subscription)

    async def pull(self, credential_id: int, subscription: str) -> list[Received]:
        """A long poll: returns when messages came in or Google's hold ran out ([])."""
        body = await self._call(credential_id, "POST", f"{subscription}:pull",
                                {"maxMessages": MAX_MESSAGES}, PULL_TIMEOUT)
        received = []
        for item in body.get("receivedMessages") or []:
            message = item.get("message") if isinstance(item, dict) else None
            if isinstance(message, dict) and isinstance(item.get("ackId"), str):
                received.append(Received(item["ackId"], str(message.get("messageId", "")),
                                         str(message.get("data", ""))))
        return received

    async def acknowledge(self, credential_id: int, subscription: str, ack_ids: list[str]
                          ) -> None:
        if ack_ids:
            await self._call(credential_id, "POST", f"{subscription}:acknowledge",
                             {"ackIds": ack_ids})

    async def _create(self, credential_id: int, name: str, body: dict[str, Any]) -> bool:
        """PUT a topic or subscription; False when it existed already."""
        try:
            await self._call(credential_id, "PUT", name, body)
        except GoogleAlreadyExists:
            return False
        logger.info("credential %d: created %s", credential_id, name)
        return True

    async def _grant_publisher(self, credential_id: int, topic: str) -> None:
        """Read-modify-write of the topic's policy with its etag; each round after a write
        reads it back, so the grant returns only once Google shows it."""
        for _ in range(POLICY_ATTEMPTS):
            policy = await self._call(credential_id, "POST", f"{topic}:getIamPolicy", {})
            if _grants(policy):
                return
            bindings = [b for b in policy.get("bindings") or [] if isinstance(b, dict)]
            for binding in bindings:
                if binding.get("role") == PUBLISHER_ROLE:
                    binding["members"] = [*binding.get("members", []), SDM_PUBLISHER]
                    break
            else:
                bindings.append({"role": PUBLISHER_ROLE, "members": [SDM_PUBLISHER]})
            try:
                await self._call(credential_id, "POST", f"{topic}:setIamPolicy", {"policy": {
                    "bindings": bindings, "etag": policy.get("etag", "")}})
            except GoogleError as exc:
                if exc.google_status != "ABORTED":
                    raise
                continue  # someone else changed the policy meanwhile
            logger.info("credential %d: granted %s %s on %s", credential_id, SDM_PUBLISHER,
                        PUBLISHER_ROLE, topic)
        if not _grants(await self._call(credential_id, "POST", f"{topic}:getIamPolicy", {})):
            raise GoogleApiError(f"the IAM policy of {topic} does not grant {PUBLISHER_ROLE} to "
                           f"{SDM_PUBLISHER} after setting it")

    async def _call(self, credential_id: int, method: str, resource: str,
                    payload: dict[str, Any], within: float = CALL_TIMEOUT) -> dict[str, Any]:
        token = await self._tokens(credential_id)
        try:
            response = await self._http.request(
                method, f"{self._base}/{resource}", json=payload, timeout=within,
                headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise GoogleUnreachable(f"Pub/Sub API unreachable ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise error_from_response(response)
        body = json_object(response)
        if body is None:
            raise GoogleUnreachable("Pub/Sub answered with something other than JSON")
        return body


def _grants(policy: dict[str, Any]) -> bool:
    return any(isinstance(b, dict) and b.get("role") == PUBLISHER_ROLE and
               SDM_PUBLISHER in (b.get("members") or []) for b in policy.get("bindings") or [])
