"""Watch pymmcore-plus's relay thread: a run whose relay ended without its end still ends.

pymmcore-plus 0.18.1's ``MDARelayThread`` can stop just before delivering
``sequenceFinished`` (it sets its stop flag before queueing the event), and a relay
killed by another listener's exception delivers nothing more. Both handlers keep a
:class:`RelayWatch` and end the run when it reports the relay gone.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

__all__ = ["LOST_FINISH", "RelayEnd", "RelayWatch"]

LOST_FINISH = (
    "pymmcore-plus's relay stopped without delivering sequenceFinished (a race in its "
    "MDARelayThread); the end of the sequence was taken from the relay stopping"
)
_RELAY_DIED = "the MDA relay thread ended without sequenceFinished"


class RelayEnd(NamedTuple):
    """How the relay ended: ``interrupted`` False if the MDA itself had ended."""

    interrupted: bool
    reason: str


class RelayWatch:
    """Remembers the thread that delivered ``sequenceStarted`` and tells when it is gone."""

    def __init__(self) -> None:
        self._relay: threading.Thread | None = None

    def bind(self) -> None:
        """Call from ``sequenceStarted``: watch the calling thread (not the main thread)."""
        current = threading.current_thread()
        self._relay = None if current is threading.main_thread() else current

    def ended(self) -> RelayEnd | None:
        """Return how the relay ended, or None while it runs (or none is watched)."""
        relay = self._relay
        if relay is None or relay.is_alive():
            return None
        # MDARelayThread sets _stop_event on sequenceFinished: if it is set, the MDA
        # ended and only the event was lost; otherwise the relay died (another listener
        # raised) and frames may have been lost with it.
        stop_event = getattr(relay, "_stop_event", None)
        if stop_event is not None and stop_event.is_set():
            return RelayEnd(False, LOST_FINISH)
        return RelayEnd(True, _RELAY_DIED)
