"""What a drill gives back: its result, per size class, with overhead and projection."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from daulat.errors import DaulatError

if TYPE_CHECKING:
    from daulat.plan.model import Fitted

CONFIDENCE = 0.95


class DrillFailed(DaulatError):
    """The drill could not measure anything usable (the CLI exits 1)."""


#: Skipped objects a drill's record names (it counts them all).
SKIPPED_SHOWN = 20


@dataclass
class ClassResult:
    """One size class: what the source holds, what was measured, the fitted model."""

    label: str
    objects: int  # in the source (manifest)
    bytes: int
    sampled_objects: int
    sampled_bytes: int
    copied_objects: int = 0
    wall_s: float = 0.0  # first read began → last write confirmed
    in_flight: int = 0  # most objects in flight at once
    steady: bool = False  # a full-pool window was measured (else the whole run, conservative)
    parallelism: float = 0.0  # mean objects in flight where measured
    per_object_s: float = 0.0  # pool seconds per object at this concurrency
    throughput_bps: float | None = None  # bytes per second at this concurrency (None: no byte cost)
    fit: str = ""
    predicted_s: float = 0.0
    low_s: float = 0.0
    high_s: float = 0.0


@dataclass
class Overhead:
    """Time outside the copying: listing the source, planning, verifying, the manifest."""

    list_s_per_object: float  # source listing, probed on the real source
    listed_in_probe: int
    bookkeeping_s_per_object: float  # planning, verification listing, manifest (fitted)
    fixed_s: float
    predicted_s: float


@dataclass
class Projection:
    """A what-if, derived from the measured model; NOT a measurement."""

    workers: int
    link_bps: float | None  # bits per second
    predicted_s: float
    low_s: float
    high_s: float
    method: str
    kind: str = "projection"


@dataclass
class DrillResult:
    id: str
    started: str
    finished: str
    src: str
    dst: str
    scratch: str  # STORE:KEY-PREFIX of the scratch copy
    scan_id: int
    scanned: str | None
    concurrency: int
    sample: str  # how the sample was chosen
    seed: int
    encrypted: bool
    objects: int  # in the source, per the scan
    bytes: int
    sampled_objects: int
    sampled_bytes: int
    classes: list[ClassResult]
    overhead: Overhead
    predicted_s: float
    low_s: float
    high_s: float
    interval_method: str
    assumptions: list[str]
    projection: Projection | None = None
    scratch_removed: bool = False
    drill_s: float = 0.0  # how long the drill itself took
    problems: list[str] = field(default_factory=list)
    kind: str = "measurement"
    # Filters: their rules (None: none given) and the objects under the prefix they leave out
    # (per the scan), which ``objects`` does not count; an exit lists them all the same.
    filter: list[str] | None = None
    excluded_objects: int = 0
    excluded_bytes: int = 0
    # Sampled objects the drill could not copy (a key the scratch destination cannot hold, a
    # failed read): counted in ``sampled_objects`` but not measured. ``skipped`` gives up to
    # SKIPPED_SHOWN of them as {"key", "why"}; ``skipped_objects`` counts them all.
    skipped_objects: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    # The model's parameters with their bootstrap replicates: kept in the drill record (for
    # `daulat plan`), left out of the result's JSON (thousands of numbers nobody reads).
    fitted: Fitted | None = field(default=None, repr=False, compare=False)

    def note_skipped(self, skipped: list[tuple[str, str]]) -> None:
        """Record the sampled objects (key, why) the drill did not copy."""
        unique = dict(skipped)
        self.skipped_objects = len(unique)
        self.skipped = [{"key": k, "why": w} for k, w in list(unique.items())[:SKIPPED_SHOWN]]

    @property
    def ok(self) -> bool:
        """The scratch copy is gone and nothing went wrong."""
        return self.scratch_removed and not self.problems

    @property
    def predicted_hours(self) -> float:
        return self.predicted_s / 3600

    def to_json(self) -> dict[str, Any]:
        fitted, self.fitted = self.fitted, None
        try:
            d = asdict(self)
        finally:
            self.fitted = fitted
        d.pop("fitted", None)
        d["ok"] = self.ok
        d["predicted_hours"] = self.predicted_hours
        d["interval_hours"] = [self.low_s / 3600, self.high_s / 3600]
        d["confidence"] = CONFIDENCE
        return d
