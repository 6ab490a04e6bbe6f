"""Messages from the graph's threads to the page's WebSocket handlers, without waiting.

A run publishes from the threads that process its chunks; each open WebSocket
subscribes from the server's event loop. :meth:`Broadcast.publish` only hands the
message to each subscriber's loop (``call_soon_threadsafe``), so a slow page can
never hold up the graph: a subscriber that falls ``maxsize`` messages behind loses
its oldest ones.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class Broadcast:
    """Fan-out of JSON-ready messages from any thread to asyncio subscribers.

    Parameters
    ----------
    maxsize : int
        Messages a subscriber may have waiting before its oldest are dropped.
    """

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._subscribers: dict[asyncio.Queue, asyncio.AbstractEventLoop] = {}
        self._lock = threading.Lock()

    def subscribe(self) -> asyncio.Queue:
        """A queue receiving every message published from now on (call in the loop)."""
        queue: asyncio.Queue = asyncio.Queue(self.maxsize)
        with self._lock:
            self._subscribers[queue] = asyncio.get_running_loop()
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        with self._lock:
            self._subscribers.pop(queue, None)

    def publish(self, message: dict[str, Any]) -> None:
        """Hand ``message`` to every subscriber (any thread; never blocks)."""
        with self._lock:
            subscribers = list(self._subscribers.items())
        for queue, loop in subscribers:
            try:
                loop.call_soon_threadsafe(_put, queue, message)
            except RuntimeError:  # that loop is closed: the server is going down
                self.unsubscribe(queue)


def _put(queue: asyncio.Queue, message: dict[str, Any]) -> None:
    if queue.full():
        queue.get_nowait()  # the page is behind: the newest state matters more
    queue.put_nowait(message)
