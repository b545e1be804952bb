"""SIMPlan: validation, expansion of MDA sequences into angle x phase events, real runs."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import useq
from pydantic import ValidationError
from pymmcore_plus.experimental.unicore import GenericDevice, UniMMCore, pymm_property

from sn2n_live.acquisition._simulated import create_demo_core, release_core
from sn2n_live.config._sim_plan import SIMPlan, expand_sequence
from sn2n_live.simulation import SIMIllumination

SLM_SHAPE = (32, 48)
PROPS = {"angle_property": ("SIM", "Angle"), "phase_property": ("SIM", "Phase")}


def tzc_sequence() -> useq.MDASequence:
    # 2 time points x 2 channels x 2 z planes = 8 image events.
    return useq.MDASequence(
        time_plan={"interval": 0.5, "loops": 2},
        channels=[{"config": "DAPI", "exposure": 7.0}, {"config": "FITC", "exposure": 12.0}],
        z_plan={"range": 1.0, "step": 1.0},
        axis_order="tcz",
    )


@pytest.mark.parametrize("n_phases", [3, 5])
def test_expand_order_indices_fields_and_metadata(n_phases: int) -> None:
    plan = SIMPlan(n_phases=n_phases, pattern_source="metadata", period_px=6.5, modulation=0.7)
    originals = list(tzc_sequence())
    events = plan.expand(tzc_sequence())

    assert plan.set_size == 3 * n_phases
    assert len(events) == len(originals) * plan.set_size == 8 * 3 * n_phases
    for k, event in enumerate(events):
        orig = originals[k // plan.set_size]
        a, h = divmod(k % plan.set_size, n_phases)  # angle slow, phase fast
        assert dict(event.index) == {**dict(orig.index), "a": a, "h": h}
        assert event.metadata["sim"] == {
            "angle": a,
            "phase": h,
            "n_angles": 3,
            "n_phases": n_phases,
            "period_px": 6.5,
            "orientation_deg": 0.0,
            "modulation": 0.7,
            "set_size": 3 * n_phases,
            "pattern_source": "metadata",
        }
        assert (event.exposure, event.channel, event.z_pos) == (
            orig.exposure,
            orig.channel,
            orig.z_pos,
        )
        assert (event.x_pos, event.y_pos, event.keep_shutter_open) == (
            orig.x_pos,
            orig.y_pos,
            orig.keep_shutter_open,
        )
        first = a == 0 and h == 0
        assert event.min_start_time == (orig.min_start_time if first else None)
        assert event.reset_event_timer == (orig.reset_event_timer and first)
        assert event.slm_image is None and event.properties is None
    # The second time point still starts on schedule.
    assert events[4 * plan.set_size].min_start_time == 0.5
    assert events[0].reset_event_timer


def test_expand_keeps_existing_metadata_and_passes_non_image_events() -> None:
    autofocus = useq.MDAEvent(action=useq.HardwareAutofocus(autofocus_device_name="AF"))
    image = useq.MDAEvent(index={"t": 3}, metadata={"user": "x"}, exposure=3.0)
    events = SIMPlan(n_angles=2, pattern_source="metadata").expand([autofocus, image])
    assert events[0] is autofocus
    assert len(events) == 1 + 6
    assert all(e.metadata["user"] == "x" and e.exposure == 3.0 for e in events[1:])


def test_slm_mode_patterns_per_event() -> None:
    plan = SIMPlan(n_phases=5)
    events = plan.expand(
        useq.MDASequence(time_plan={"interval": 0, "loops": 2}), slm_shape=SLM_SHAPE
    )
    assert len(events) == 2 * 15

    expected = np.rint(SIMIllumination(n_phases=5).patterns(SLM_SHAPE) * 255).astype(np.uint8)
    np.testing.assert_array_equal(plan.slm_patterns(SLM_SHAPE), expected)

    images = [np.asarray(e.slm_image) for e in events]
    assert all(img.dtype == np.uint8 and img.shape == SLM_SHAPE for img in images)
    assert all(e.slm_image.device is None for e in events)
    for k, event in enumerate(events):
        a, h = event.index["a"], event.index["h"]
        np.testing.assert_array_equal(images[k], expected[a, h])
    # Every pattern of a set differs from every other (by phase and by angle).
    first_set = images[:15]
    for i in range(15):
        for j in range(i + 1, 15):
            assert not np.array_equal(first_set[i], first_set[j]), (i, j)
    # Arrays are computed once and shared by all events showing the same pattern.
    assert all(events[k].slm_image.data is events[k + 15].slm_image.data for k in range(15))
    assert not events[0].slm_image.data.flags.writeable


def test_slm_device_is_passed_on() -> None:
    events = SIMPlan(slm_device="DMD").expand([useq.MDAEvent()], slm_shape=SLM_SHAPE)
    assert {e.slm_image.device for e in events} == {"DMD"}


def test_properties_mode_sets_angle_and_phase_indices() -> None:
    plan = SIMPlan(n_phases=5, pattern_source="properties", **PROPS)
    existing = useq.MDAEvent(properties=[("Laser", "Power", 50)])
    events = plan.expand([existing])
    assert len(events) == 15
    for event in events:
        a, h = event.index["a"], event.index["h"]
        assert [tuple(p) for p in event.properties] == [
            ("Laser", "Power", 50),
            ("SIM", "Angle", a),
            ("SIM", "Phase", h),
        ]
        assert event.slm_image is None


def test_metadata_mode_adds_nothing_but_metadata() -> None:
    events = SIMPlan(pattern_source="metadata").expand([useq.MDAEvent()], slm_shape=SLM_SHAPE)
    assert len(events) == 9
    assert all(e.slm_image is None and e.properties is None for e in events)


def test_no_plan_passes_sequence_through_unchanged() -> None:
    sequence = tzc_sequence()
    assert expand_sequence(sequence, None) == list(sequence)
    plan = SIMPlan(pattern_source="metadata")
    assert expand_sequence(sequence, plan) == plan.expand(sequence)


def test_illumination_matches_plan() -> None:
    plan = SIMPlan(n_angles=2, n_phases=5, period_px=5.0, modulation=0.5, orientation_deg=10)
    assert plan.illumination() == SIMIllumination(
        n_angles=2, n_phases=5, period_px=5.0, modulation=0.5, orientation_deg=10
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pattern_source": "properties"}, "needs angle_property and phase_property"),
        (
            {"pattern_source": "properties", "angle_property": ("SIM", "Angle")},
            "needs phase_property",
        ),
        (
            {
                "pattern_source": "properties",
                "angle_property": ("SIM", "A"),
                "phase_property": ("SIM", "A"),
            },
            "different properties",
        ),
        (
            {
                "pattern_source": "properties",
                "angle_property": ("", "A"),
                "phase_property": ("S", "P"),
            },
            "must name a device and a property",
        ),
        ({"angle_property": ("SIM", "Angle")}, "only apply to pattern_source='properties'"),
        ({"pattern_source": "metadata", "slm_device": "SLM"}, "slm_device only applies"),
        ({"n_angles": 0}, "n_angles"),
        ({"n_phases": 0}, "n_phases"),
        ({"period_px": 1.5}, "period_px"),
        ({"modulation": 1.5}, "modulation"),
        ({"orientation_deg": float("nan")}, "orientation_deg"),
        ({"pattern_source": "camera"}, "pattern_source"),
        ({"n_pahses": 5}, "n_pahses"),
    ],
)
def test_invalid_plans_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        SIMPlan(**kwargs)


def test_plan_is_frozen() -> None:
    plan = SIMPlan()
    with pytest.raises(ValidationError):
        plan.n_phases = 5  # type: ignore[misc]


def test_invalid_expansions_are_rejected() -> None:
    with pytest.raises(ValueError, match="needs slm_shape"):
        SIMPlan().expand([useq.MDAEvent()])
    once = SIMPlan(pattern_source="metadata").expand([useq.MDAEvent()])
    with pytest.raises(ValueError, match="already has the SIM index key"):
        SIMPlan(pattern_source="metadata").expand(once)
    with pytest.raises(ValueError, match=r"already has metadata\['sim'\]"):
        SIMPlan(pattern_source="metadata").expand([useq.MDAEvent(metadata={"sim": 1})])
    with pytest.raises(ValueError, match="already has an slm_image"):
        SIMPlan().expand([useq.MDAEvent(slm_image=np.zeros(SLM_SHAPE))], slm_shape=SLM_SHAPE)
    with pytest.raises(ValueError, match=r"already sets \[\('SIM', 'Phase'\)\]"):
        SIMPlan(pattern_source="properties", **PROPS).expand(
            [useq.MDAEvent(properties=[("SIM", "Phase", 2)])]
        )
    with pytest.raises(ValueError, match="shape must be two integers"):
        SIMPlan().expand([useq.MDAEvent()], slm_shape=(4, 4))


class SIMController(GenericDevice):
    """A pattern controller selected by angle and phase index properties."""

    def __init__(self) -> None:
        super().__init__()
        self._angle = 0
        self._phase = 0

    @pymm_property(limits=(0, 10), name="Angle")
    def angle(self) -> int:
        return self._angle

    @angle.setter
    def angle(self, value: int) -> None:
        self._angle = int(value)

    @pymm_property(limits=(0, 10), name="Phase")
    def phase(self) -> int:
        return self._phase

    @phase.setter
    def phase(self, value: int) -> None:
        self._phase = int(value)


@pytest.fixture
def demo_core_with_controller() -> Iterator[UniMMCore]:
    core = UniMMCore()
    core.loadSystemConfiguration()  # DemoCamera etc. from mm-test-adapters
    core.loadPyDevice("SIM", SIMController())
    core.initializeDevice("SIM")
    core.setExposure(1.0)
    yield core
    release_core(core)


def test_properties_mode_runs_on_a_real_core(demo_core_with_controller: UniMMCore) -> None:
    core = demo_core_with_controller
    seen: list[tuple[dict, str, str]] = []

    def on_frame(img: np.ndarray, event: useq.MDAEvent) -> None:
        seen.append(
            (dict(event.index), core.getProperty("SIM", "Angle"), core.getProperty("SIM", "Phase"))
        )

    core.mda.events.frameReady.connect(on_frame)
    plan = SIMPlan(n_phases=5, pattern_source="properties", **PROPS)
    core.mda.run(plan.expand(useq.MDASequence(time_plan={"interval": 0, "loops": 2})))
    assert len(seen) == 30
    for index, angle, phase in seen:
        assert (float(angle), float(phase)) == (index["a"], index["h"])


@pytest.fixture
def demo_core() -> Iterator:
    core = create_demo_core()
    core.setExposure(1.0)
    yield core
    release_core(core)


def test_expanded_list_runs_with_the_builtin_memory_sink(demo_core) -> None:
    # acquisition.md §1.4: expanding inside the engine breaks a path/memory sink; an
    # expanded list must run with one.
    events = SIMPlan(pattern_source="metadata").expand(
        useq.MDASequence(time_plan={"interval": 0, "loops": 2}, channels=["DAPI"])
    )
    demo_core.mda.run(events, output="memory")
    view = demo_core.mda.get_view()
    assert view is not None and view.shape == (18, 512, 512)
