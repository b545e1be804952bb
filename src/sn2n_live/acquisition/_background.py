"""A live-denoise run on a thread of its own: what a GUI starts and keeps responsive.

``live_denoise`` wants the MDA run blocking inside its block; a GUI thread must not
block. :class:`BackgroundRun` runs that block (open the stores, ``core.mda.run``, the
catch-up, close) on one worker thread and hands the handler over as soon as it exists,
so a preview can follow the run while it goes on. :func:`profile_run_options` turns a
profile's ``[output]`` and ``[denoise]`` sections into ``live_denoise`` options, the
same for ``sn2n-live acquire`` and for runs started from the GUI.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sn2n_live.acquisition._contracts import FrameDenoiser, LiveHandler, RunSummary

if TYPE_CHECKING:
    import useq
    from pymmcore_plus import CMMCorePlus

    from sn2n_live.profiles import Profile

__all__ = ["BackgroundRun", "profile_run_options"]

_CANCEL_CHECK_S = 0.05  # how often the worker looks for a cancel the runner missed


def profile_run_options(profile: Profile) -> dict[str, Any]:
    """Return the ``live_denoise`` options a profile asks for (policy, stores, isolation).

    Parameters
    ----------
    profile : Profile
        Its ``[output]`` settings and ``denoise.risk``; the profile itself is stored in
        run.json.
    """
    output = profile.output
    return {
        "policy": output.backlog_policy,
        "memory_budget_mb": output.memory_budget_mb,
        "denoised_dtype": output.denoised_dtype,
        "file_format": output.format,
        "zarr_backend": output.zarr_backend,
        "isolation": output.isolation,
        "risk": profile.denoise.risk,
        "laser_property": profile.camera.laser_property,
        "profile": profile.model_dump(mode="json"),
    }


class BackgroundRun:
    """One MDA run, denoised live and saved, on a worker thread.

    Usage (e.g. from a Qt slot; nothing here blocks)::

        run = BackgroundRun(core, events, model=factory, out="runs/003").start()
        run.wait_for_handler(5.0)          # the stores are open, frames may come
        preview.set_handler(run.handler)
        ...
        run.cancel()                       # optional: ends the MDA early (``canceled``)
        run.join(); print(run.summary.status)

    Parameters
    ----------
    core : pymmcore_plus.CMMCorePlus
        The microscope; nothing else may run an MDA on it meanwhile.
    sequence : sequence of useq.MDAEvent, useq.MDASequence or iterator of useq.MDAEvent
        What to acquire (expanded SIM sets included; an iterator may be endless).
    model : FrameDenoiser, str, os.PathLike or callable
        As :func:`~sn2n_live.acquisition.live_denoise` takes it.
    out : str or os.PathLike
        Run folder to create.
    on_done : callable, optional
        Called with this run from the worker thread once it is over (summary or error
        set); keep it thread-safe (e.g. set a flag a GUI timer reads).
    **options
        More :func:`~sn2n_live.acquisition.live_denoise` options (see
        :func:`profile_run_options`).
    """

    def __init__(
        self,
        core: CMMCorePlus,
        sequence: Sequence[useq.MDAEvent] | useq.MDASequence | Iterator[useq.MDAEvent],
        /,
        *,
        model: FrameDenoiser | str | os.PathLike[str] | Callable[[], FrameDenoiser],
        out: str | os.PathLike[str],
        on_done: Callable[[BackgroundRun], None] | None = None,
        **options: Any,
    ) -> None:
        self.core = core
        # A list is kept as given; a sequence or an (endless) iterator is run as it comes.
        self.sequence = list(sequence) if isinstance(sequence, list | tuple) else sequence
        self.out = out
        self._model = model
        self._options = options
        self._on_done = on_done
        self._handler: LiveHandler | None = None
        self._summary: RunSummary | None = None
        self._error: BaseException | None = None
        self._cancel_requested = False
        self._handler_ready = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sn2n-background-run", daemon=True)

    def start(self) -> BackgroundRun:
        """Start the worker thread (once) and return this run."""
        if self._thread.ident is None:
            self._thread.start()
        return self

    @property
    def handler(self) -> LiveHandler | None:
        """The run's live-denoise handler, once its stores are open (None before)."""
        return self._handler

    @property
    def done(self) -> bool:
        """Whether the run is over: stores closed, or failed to open."""
        return self._done.is_set()

    @property
    def summary(self) -> RunSummary | None:
        """The run's summary once it is over (None if it failed before opening)."""
        return self._summary

    @property
    def error(self) -> BaseException | None:
        """What stopped the run from opening or finishing normally, if anything."""
        return self._error

    def wait_for_handler(self, timeout: float | None = None) -> LiveHandler | None:
        """Wait until the handler exists (or the run failed); return it (None: failed)."""
        self._handler_ready.wait(timeout)
        return self._handler

    def cancel(self) -> None:
        """End the acquisition early (returns at once): the run closes ``canceled``.

        The frames saved so far stay. A cancel before the MDA started is applied as soon
        as it starts (pymmcore-plus ignores a cancel while its runner is idle).
        """
        self._cancel_requested = True
        if self.core.mda.is_running():
            self.core.mda.cancel()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the run to be over; return whether it is."""
        return self._done.wait(timeout)

    def _run(self) -> None:
        from sn2n_live.acquisition._session import live_denoise

        events = self.sequence
        try:
            with live_denoise(
                self.core, model=self._model, out=self.out, **self._frames_expected(events)
            ) as handler:
                self._handler = handler
                self._handler_ready.set()
                if not self._cancel_requested:  # a cancel before the start runs nothing
                    self._run_mda(events)
            # A handler whose sequence never started has no run to wait for.
            self._summary = handler.wait() if handler.started else None
        except BaseException as exc:  # reported through `error`; a thread has no caller
            self._error = exc
            handler = self._handler
            if handler is not None and handler.finished:
                self._summary = handler.wait(timeout=0)
        finally:
            self._handler_ready.set()
            self._done.set()
            if self._on_done is not None:
                self._on_done(self)

    def _run_mda(self, events: Any) -> None:
        """Run the MDA on pymmcore-plus's thread; pass on a cancel that came too early."""
        thread = self.core.run_mda(events)
        while thread.is_alive():
            thread.join(_CANCEL_CHECK_S)
            if self._cancel_requested and self.core.mda.is_running():
                self.core.mda.cancel()

    def _frames_expected(self, events: Any) -> dict[str, Any]:
        # A list of events is counted up front (progress, frames_expected); a sequence
        # may be long or endless, so it is not expanded here.
        options = dict(self._options)
        if isinstance(events, list):
            options.setdefault("events", events)
        return options
