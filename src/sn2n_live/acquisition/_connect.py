"""Relay MDA events to a listener on a thread of its own, with either signal backend.

pymmcore-plus's ``mda_listeners_connected`` cannot be used under a QApplication
(0.18.1): with the Qt backend ``core.mda.events`` is a ``QObject`` of the GUI thread, and
it connects its relay (``relay.start``/``relay.stop`` and the ``relay.frameReady``-style
appenders) with ``AutoConnection``. An MDA on another thread (``core.run_mda``) then
*queues* every event to the GUI thread's event loop. Joining the MDA thread there
delivers nothing (the relay never starts, no frame is saved, ``wait()`` never returns);
a ``processEvents`` loop that ends with the MDA thread leaves ``relay.stop`` queued
while ``mda_listeners_connected`` joins the relay, which never stops (run.json stays
``running``).

Here the appenders are connected with ``DirectConnection`` (ignored by psygnal, where a
connection is direct anyway): they run on the acquisition thread, take O(1) and only
append to a deque, and the relay thread delivers to the listener. Nothing waits on the
GUI thread, so every way of running the MDA inside the block works.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# Private but stable since pymmcore-plus 0.9; its Qt connection type is what this needs,
# and it imports qtpy only for a signal that already is a Qt one.
from pymmcore_plus._util import listeners_connected

__all__ = ["mda_events_relayed"]

_log = logging.getLogger(__name__)

_POLL_S = 0.005  # as pymmcore-plus's MDARelayThread


class _MDARelay(threading.Thread):
    """Delivers MDA events queued by the acquisition thread to ``listener``, in order.

    Its ``_stop_event`` is set once ``sequenceFinished`` has been queued, like that of
    pymmcore-plus's ``MDARelayThread``: the handlers read it to tell a relay that ended
    after the MDA from one that died during it.
    """

    def __init__(self, listener: Any) -> None:
        super().__init__(name="sn2n-mda-relay")
        self._listener = listener
        self._deque: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._stop_event = threading.Event()
        self._closing = threading.Event()
        self._acquiring: threading.Thread | None = None

    def run(self) -> None:
        while True:
            try:
                name, args = self._deque.popleft()
            except IndexError:
                # The deque is checked again: events queued just before close() count.
                if self._closing.is_set() and not self._deque:
                    return
                time.sleep(_POLL_S)
                continue
            slot = getattr(self._listener, name, None)
            if slot is None:
                continue
            try:
                slot(*args)
            except Exception:  # one failing callback must not lose the later frames
                _log.exception("MDA listener %s raised", name)

    def close(self) -> None:
        """Deliver what is queued, then end the thread."""
        self._closing.set()

    def wait_for_sequence_end(self) -> None:
        """Block while a sequence started in this block runs on another, live thread.

        Returns at once after ``sequenceFinished``, when no sequence started, or when
        the thread that started it is gone or is this one (then its end cannot come).
        """
        while not self._stop_event.wait(0.05):
            acquiring = self._acquiring
            if acquiring is None or acquiring is threading.current_thread():
                return
            if not acquiring.is_alive():
                return

    # Connected to core.mda.events: called on the acquisition thread, O(1).

    def sequenceStarted(self, *args: Any) -> None:
        self._acquiring = threading.current_thread()
        self._stop_event.clear()
        self._deque.append(("sequenceStarted", args))

    def frameReady(self, *args: Any) -> None:
        self._deque.append(("frameReady", args))

    def sequencePauseToggled(self, *args: Any) -> None:
        self._deque.append(("sequencePauseToggled", args))

    def sequenceCanceled(self, *args: Any) -> None:
        self._deque.append(("sequenceCanceled", args))

    def sequenceFinished(self, *args: Any) -> None:
        # Queued before the flag is set (pymmcore-plus sets it first and can lose it).
        self._deque.append(("sequenceFinished", args))
        self._stop_event.set()


@contextmanager
def mda_events_relayed(listener: Any, mda_events: Any) -> Iterator[threading.Thread]:
    """Connect ``listener``'s MDA callbacks to ``mda_events`` through a relay thread.

    A drop-in for ``mda_listeners_connected(listener, mda_events=mda_events)`` that also
    works with pymmcore-plus's Qt signal backend when the MDA runs on another thread
    than the GUI's (``core.run_mda`` then ``join()`` or a ``processEvents`` loop).

    Parameters
    ----------
    listener : Any
        Object with some of ``sequenceStarted``, ``frameReady``,
        ``sequencePauseToggled``, ``sequenceCanceled`` and ``sequenceFinished``; they
        are called on the relay thread, never on the acquisition or GUI thread.
    mda_events : Any
        ``core.mda.events`` (psygnal or Qt signals).

    Yields
    ------
    threading.Thread
        The relay thread (started on entry).

    Notes
    -----
    On a normal exit, a sequence still running on another thread is waited for (its
    ``sequenceFinished`` ends the run); then every queued event is delivered and the
    relay ends. If the block raises, the queued events are delivered without waiting.
    """
    relay = _MDARelay(listener)
    relay.start()
    try:
        with listeners_connected(mda_events, relay, qt_connection_type="DirectConnection"):
            yield relay
            relay.wait_for_sequence_end()
    finally:
        relay.close()
        relay.join()
