"""SIM acquisition plans: expand a user's MDA sequence into angle x phase events.

useq-schema's ``MDASequence`` can only iterate the axes ``t p g c z``, so the SIM
pattern axes are added here by expanding every image event of the user's sequence into
``n_angles * n_phases`` events (angle slow, phase fast) with the extra index keys ``"a"``
(angle) and ``"h"`` (phase). The expanded *list* is what gets passed to
``core.mda.run``: an engine-side expansion would break pymmcore-plus's built-in sink,
which sizes itself from the original sequence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypedDict

import numpy as np
import useq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sn2n_live.config._choices import PatternSource
from sn2n_live.simulation import DEFAULT_PERIOD_PX, SIMIllumination

DeviceProperty = tuple[str, str]

# The MDA index keys of the pattern axes, and where an event's SIM metadata lives.
ANGLE_KEY = "a"
PHASE_KEY = "h"
SIM_METADATA_KEY = "sim"


class SIMEventMetadata(TypedDict):
    """What :meth:`SIMPlan.expand` stores under ``event.metadata["sim"]``."""

    angle: int
    phase: int
    n_angles: int
    n_phases: int
    period_px: float
    orientation_deg: float
    modulation: float
    set_size: int
    pattern_source: PatternSource


class SIMPlan(BaseModel):
    """How each image of an acquisition becomes a set of SIM pattern frames.

    Parameters
    ----------
    n_angles : int
        Number of pattern orientations per set, >= 1 (2-D SIM uses 3).
    n_phases : int
        Number of phase steps per orientation, >= 1 (2-D SIM uses 3 or 5).
    period_px : float
        Stripe period of the displayed pattern in SLM pixels, >= 2 (the sampling limit).
        The default (≈ 4.20) is :class:`~sn2n_live.simulation.SIMIllumination`'s: 0.85
        of the simulated microscope's optical cut-off, where SLM and camera pixels match.
    orientation_deg : float
        Orientation of the first angle in degrees; angles are spaced by 180°/n_angles.
    modulation : float
        Modulation depth of the displayed pattern in [0, 1].
    pattern_source : {"slm", "properties", "metadata"}
        How the pattern reaches the hardware. ``"slm"``: each event carries the pattern
        image as ``slm_image`` (SLM/DMD rigs). ``"properties"``: each event sets the
        angle and phase *indices* through ``angle_property`` and ``phase_property``
        (galvo, piezo or controller rigs). ``"metadata"``: the pattern is switched by
        something outside Micro-Manager (or not at all, e.g. a demo rig); events carry
        only the SIM metadata.
    slm_device : str or None
        SLM device label for ``"slm"`` mode; None uses the core's current SLM at run
        time. Only allowed in ``"slm"`` mode.
    angle_property : tuple of (str, str) or None
        ``(device, property)`` that selects the angle index; required in
        ``"properties"`` mode and only allowed there.
    phase_property : tuple of (str, str) or None
        ``(device, property)`` that selects the phase index; required in
        ``"properties"`` mode and only allowed there.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    n_angles: int = Field(default=3, ge=1)
    n_phases: int = Field(default=3, ge=1)
    period_px: float = Field(default=DEFAULT_PERIOD_PX, ge=2.0)
    orientation_deg: float = 0.0
    modulation: float = Field(default=0.8, ge=0.0, le=1.0)
    pattern_source: PatternSource = "slm"
    slm_device: str | None = Field(default=None, min_length=1)
    angle_property: DeviceProperty | None = None
    phase_property: DeviceProperty | None = None

    @model_validator(mode="after")
    def _check_pattern_source(self) -> SIMPlan:
        props = {"angle_property": self.angle_property, "phase_property": self.phase_property}
        if self.pattern_source == "properties":
            missing = [name for name, value in props.items() if value is None]
            if missing:
                raise ValueError(
                    f"pattern_source='properties' needs {' and '.join(missing)} set to "
                    "a (device, property) pair, e.g. angle_property=('SIM', 'Angle'), "
                    "phase_property=('SIM', 'Phase')"
                )
            for name, value in props.items():
                if value is not None and not all(value):
                    raise ValueError(f"{name} must name a device and a property; got {value!r}")
            if self.angle_property == self.phase_property:
                raise ValueError(
                    f"angle_property and phase_property are both {self.angle_property!r}; "
                    "angle and phase must be set through different properties"
                )
        else:
            given = [name for name, value in props.items() if value is not None]
            if given:
                raise ValueError(
                    f"{' and '.join(given)} only apply to pattern_source='properties' "
                    f"(got pattern_source={self.pattern_source!r}); remove them or "
                    "switch pattern_source"
                )
        if self.slm_device is not None and self.pattern_source != "slm":
            raise ValueError(
                f"slm_device only applies to pattern_source='slm' (got "
                f"pattern_source={self.pattern_source!r}); remove it or switch pattern_source"
            )
        return self

    @property
    def set_size(self) -> int:
        """Number of frames per SIM set, ``n_angles * n_phases``."""
        return self.n_angles * self.n_phases

    def illumination(self) -> SIMIllumination:
        """Return the illumination model of this plan's patterns."""
        return SIMIllumination(
            n_angles=self.n_angles,
            n_phases=self.n_phases,
            period_px=self.period_px,
            modulation=self.modulation,
            orientation_deg=self.orientation_deg,
        )

    def slm_patterns(self, shape: Sequence[int]) -> np.ndarray:
        """Return the SLM images of all patterns.

        Parameters
        ----------
        shape : sequence of int
            SLM ``(height, width)`` in pixels, each >= 16.

        Returns
        -------
        numpy.ndarray
            ``(n_angles, n_phases, height, width)`` uint8, ``round(pattern * 255)``.
        """
        patterns = self.illumination().patterns(shape)
        return np.rint(patterns * np.float32(255.0)).astype(np.uint8)

    def expand(
        self,
        sequence: useq.MDASequence | Iterable[useq.MDAEvent],
        *,
        slm_shape: Sequence[int] | None = None,
    ) -> list[useq.MDAEvent]:
        """Expand every image event into ``set_size`` pattern events.

        Each image event ``e`` becomes ``n_angles * n_phases`` events, angle slow and
        phase fast, that keep all of ``e``'s fields (exposure, channel, positions, ...)
        except that:

        - ``index`` gains ``"a"`` (angle) and ``"h"`` (phase);
        - ``metadata["sim"]`` holds a :class:`SIMEventMetadata`;
        - ``slm_image`` (``"slm"`` mode) or ``properties`` (``"properties"`` mode) select
          the pattern;
        - ``min_start_time`` and ``reset_event_timer`` stay on the first pattern only,
          so the set starts on schedule and later patterns neither wait nor restart
          the event timer.

        Non-image events (e.g. hardware autofocus) pass through unchanged.

        Parameters
        ----------
        sequence : useq.MDASequence or iterable of useq.MDAEvent
            The user's acquisition (axes ``t p g c z``).
        slm_shape : sequence of int, optional
            SLM ``(height, width)``; required in ``"slm"`` mode, ignored otherwise.

        Returns
        -------
        list of useq.MDAEvent
            The events to pass to ``core.mda.run``.

        Raises
        ------
        ValueError
            If ``slm_shape`` is missing in ``"slm"`` mode, or an event already has SIM
            index keys or metadata, an SLM image (``"slm"`` mode) or a value for the
            angle/phase properties (``"properties"`` mode).
        """
        slm_images = self._slm_images(slm_shape) if self.pattern_source == "slm" else None
        expanded: list[useq.MDAEvent] = []
        for number, event in enumerate(sequence):
            if not isinstance(event.action, useq.AcquireImage | None):
                expanded.append(event)
                continue
            self._check_event(event, number)
            for a in range(self.n_angles):
                for h in range(self.n_phases):
                    update: dict[str, Any] = {
                        "index": {**event.index, ANGLE_KEY: a, PHASE_KEY: h},
                        "metadata": {**event.metadata, SIM_METADATA_KEY: self._metadata(a, h)},
                    }
                    if a or h:
                        update["min_start_time"] = None
                        update["reset_event_timer"] = False
                    if slm_images is not None:
                        update["slm_image"] = slm_images[a][h]
                    elif self.angle_property is not None and self.phase_property is not None:
                        update["properties"] = [
                            *(event.properties or ()),
                            (*self.angle_property, a),
                            (*self.phase_property, h),
                        ]
                    expanded.append(event.replace(**update))
        return expanded

    def _slm_images(self, slm_shape: Sequence[int] | None) -> list[list[useq.SLMImage]]:
        if slm_shape is None:
            raise ValueError(
                "pattern_source='slm' needs slm_shape=(height, width) to draw the patterns, "
                "e.g. slm_shape=(core.getSLMHeight(), core.getSLMWidth())"
            )
        patterns = self.slm_patterns(slm_shape)
        # One read-only array and SLMImage per pattern, shared by all events that show it.
        patterns.setflags(write=False)
        return [
            [
                useq.SLMImage(data=patterns[a, h], device=self.slm_device)
                for h in range(self.n_phases)
            ]
            for a in range(self.n_angles)
        ]

    def _check_event(self, event: useq.MDAEvent, number: int) -> None:
        where = f"event {number} (index {dict(event.index)})"
        if clash := {ANGLE_KEY, PHASE_KEY} & set(event.index):
            raise ValueError(
                f"{where} already has the SIM index key(s) {sorted(clash)}; expand a "
                "sequence only once, and keep 'a' and 'h' free for angle and phase"
            )
        if SIM_METADATA_KEY in event.metadata:
            raise ValueError(
                f"{where} already has metadata[{SIM_METADATA_KEY!r}]; expand a sequence only once"
            )
        if self.pattern_source == "slm" and event.slm_image is not None:
            raise ValueError(
                f"{where} already has an slm_image; with pattern_source='slm' the plan sets "
                "the SLM image of every event, so remove it from the sequence"
            )
        if self.pattern_source == "properties" and event.properties:
            ours = {self.angle_property, self.phase_property}
            if clash_props := [p[:2] for p in event.properties if tuple(p[:2]) in ours]:
                raise ValueError(
                    f"{where} already sets {clash_props}, which the plan uses for angle and "
                    "phase; remove them from the sequence's properties"
                )

    def _metadata(self, angle: int, phase: int) -> SIMEventMetadata:
        return SIMEventMetadata(
            angle=angle,
            phase=phase,
            n_angles=self.n_angles,
            n_phases=self.n_phases,
            period_px=self.period_px,
            orientation_deg=self.orientation_deg,
            modulation=self.modulation,
            set_size=self.set_size,
            pattern_source=self.pattern_source,
        )


def expand_sequence(
    sequence: useq.MDASequence | Iterable[useq.MDAEvent],
    plan: SIMPlan | None,
    *,
    slm_shape: Sequence[int] | None = None,
) -> list[useq.MDAEvent]:
    """Expand ``sequence`` with ``plan``, or list it unchanged when ``plan`` is None.

    Parameters
    ----------
    sequence : useq.MDASequence or iterable of useq.MDAEvent
        The user's acquisition.
    plan : SIMPlan or None
        The SIM plan; None for acquisitions without pattern axes (widefield, or SIM
        whose patterns the hardware cycles on its own, e.g. spinning-disk SIM).
    slm_shape : sequence of int, optional
        SLM ``(height, width)``, see :meth:`SIMPlan.expand`.

    Returns
    -------
    list of useq.MDAEvent
        The events to pass to ``core.mda.run``.
    """
    if plan is None:
        return list(sequence)
    return plan.expand(sequence, slm_shape=slm_shape)
