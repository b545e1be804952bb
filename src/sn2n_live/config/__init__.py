"""The configuration layer: schemas of what a run is asked to do, with no hardware.

Importing it loads pydantic, useq-schema and the simulator's optics constants, never
pymmcore-plus, the writers, torch or Qt, so that ``sn2n-live profile check --schema-only``
validates a profile without them.
"""

from sn2n_live.config._sim_plan import SIMEventMetadata, SIMPlan, expand_sequence

__all__ = ["SIMEventMetadata", "SIMPlan", "expand_sequence"]
