"""Fingerprints made by hand, for planner tests that need exact spacings and shapes."""

from __future__ import annotations

from collections.abc import Sequence

from medseg.planning import ChannelStats, Fingerprint

CT_STATS = ChannelStats(
    "CT", mean=95.0, std=60.0, median=98.0, min=-900.0, max=1500.0, percentile_00_5=-80.5, percentile_99_5=260.25
)


def fingerprint(
    spacings: Sequence[tuple[float, float, float]],
    shapes: Sequence[tuple[int, int, int]],
    *,
    modality: str = "CT",
    channels: Sequence[str] = ("CT",),
    labels: dict[int, str] | None = None,
) -> Fingerprint:
    """A fingerprint with the given per-case grids; intensity statistics are CT-like."""
    labels = labels or {1: "liver", 2: "spleen"}
    stats = tuple(
        CT_STATS if name == "CT" else ChannelStats(name, 300.0, 80.0, 290.0, 0.0, 900.0, 40.0, 650.0)
        for name in channels
    )
    return Fingerprint(
        modality=modality,
        channels=stats,
        labels=labels,
        spacings=tuple(tuple(float(v) for v in s) for s in spacings),  # type: ignore[misc]
        shapes=tuple(tuple(int(v) for v in s) for s in shapes),  # type: ignore[misc]
        label_voxels={k: 1000 * k for k in labels},
        label_cases=dict.fromkeys(labels, len(shapes)),
        num_cases=len(shapes),
    )


def abdominal_ct(cases: int = 30) -> Fingerprint:
    """Thin-slice abdominal CT: 0.7-0.9 mm in plane, 1-1.5 mm slices, 512 x 512 x 200-320."""
    spacings = [(0.7 + 0.2 * (c % 5) / 4, 0.7 + 0.2 * (c % 5) / 4, 1.0 + 0.5 * (c % 3) / 2) for c in range(cases)]
    shapes = [(512, 512, 200 + 40 * (c % 4)) for c in range(cases)]
    return fingerprint(spacings, shapes)


def prostate_mr(cases: int = 20) -> Fingerprint:
    """0.7 x 0.7 mm T2 MR, mostly 5 mm slices, a few thinner (3-3.5 mm)."""
    thickness = [3.0, 3.0, 3.5] + [5.0] * (cases - 3)
    return fingerprint(
        [(0.7, 0.7, t) for t in thickness],
        [(320, 320, round(150 / t)) for t in thickness],
        modality="MR",
        channels=("T2",),
        labels={1: "prostate"},
    )
