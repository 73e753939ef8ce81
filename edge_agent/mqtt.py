"""An aiomqtt client whose QoS 1 publish fails when the broker refuses the message.

MQTT 5 lets a broker acknowledge a PUBLISH with a reason code of 0x80 or more (0x87 not
authorized by its ACL, 0x97 quota exceeded, 0x99 payload format invalid, ...): the
message was *not* taken. aiomqtt 2.x (and paho's ``is_published``) treat every PUBACK as
success, so a forwarder that moves its cursor on ``await publish()`` would drop records
a misconfigured ACL refused, silently. paho does pass the reason code to
``on_publish``; this client keeps it per message id and raises :class:`PublishRefused`
from ``publish`` (a subclass of ``aiomqtt.MqttError``, so a caller's reconnect-and-resend
path handles it and nothing is acknowledged).
"""

from __future__ import annotations

import contextvars
from typing import Any

import aiomqtt

# The message id of the PUBLISH this task just queued (aiomqtt's publish calls paho's
# synchronously, in the calling task, before it awaits the acknowledgement).
_last_mid: contextvars.ContextVar[int | None] = contextvars.ContextVar("mqtt_mid",
                                                                       default=None)


class PublishRefused(aiomqtt.MqttError):
    """The broker acknowledged a QoS 1 PUBLISH with a failure reason code."""

    def __init__(self, topic: str, reason: Any) -> None:
        self.topic = topic
        self.reason_code = int(getattr(reason, "value", 0) or 0)
        super().__init__(f"the broker refused a message to {topic}: {reason} "
                         f"(reason code 0x{self.reason_code:02x})")


class CheckedClient(aiomqtt.Client):
    def __init__(self, *args: Any, in_flight: int = 100, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # aiomqtt logs a warning for every call made while more than 10 are pending:
        # with a window of QoS 1 publishes in flight, that is one log line per record.
        self.pending_calls_threshold = in_flight + 10
        self._refused: dict[int, Any] = {}
        paho_publish = self._client.publish

        def publish(*a: Any, **k: Any) -> Any:
            info = paho_publish(*a, **k)
            _last_mid.set(info.mid)
            return info

        self._client.publish = publish  # type: ignore[method-assign]

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any,
                    properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            self._refused[mid] = reason_code
        super()._on_publish(client, userdata, mid, reason_code, properties)

    async def publish(self, topic: str, payload: Any = None, qos: int = 0,
                      retain: bool = False, properties: Any = None, *args: Any,
                      timeout: float | None = None, **kwargs: Any) -> None:
        _last_mid.set(None)
        await super().publish(topic, payload, qos, retain, properties, *args,
                              timeout=timeout, **kwargs)
        mid = _last_mid.get()
        reason = self._refused.pop(mid, None) if mid is not None else None
        if reason is not None:
            raise PublishRefused(topic, reason)
