"""``report.html`` (self-contained: plots as base64 PNG) and the profile copy with the dose."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sn2n_live.tune._plan import DosePoint, Targets
    from sn2n_live.tune._recommend import Recommendation
    from sn2n_live.tune._sweep import SweepResult

__all__ = ["profile_with_dose", "write_report"]


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _dose_axis(ax, x: list[float]) -> None:
    """Log dose axis with one labelled tick per dose of the sweep."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(x, [f"{v:.3g}" for v in x], fontsize=7)
    ax.set_xlabel("dose / reference dose")


def _mark(ax, rec: Recommendation) -> None:
    if rec.dose is not None:
        ax.axvline(rec.dose.relative, color="tab:green", ls="--", label="recommended")
    if rec.break_point is not None and not rec.break_point_below_sweep:
        ax.axvline(rec.break_point.relative, color="tab:red", ls=":", label="break point")


def _curves(result: SweepResult, rec: Recommendation, targets: Targets) -> list[tuple[str, str]]:
    from matplotlib.figure import Figure

    x = [d.point.relative for d in result.doses]
    plots = []

    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    ax.plot(x, [d.psnr_raw for d in result.doses], "o-", label="raw")
    ax.plot(x, [d.psnr_gaussian for d in result.doses], "s-", label="best Gaussian")
    ax.plot(x, [d.psnr_denoised for d in result.doses], "^-", label="denoised")
    if result.simulated:
        ax.plot(
            x,
            [d.truth["psnr_denoised"] for d in result.doses],
            "^:",
            c="gray",
            label="denoised vs truth",
        )
    ax.axhline(targets.min_psnr_db, color="k", lw=0.8, label="target")
    _mark(ax, rec)
    _dose_axis(ax, x)
    ax.set(ylabel="PSNR vs reference (dB)")
    ax.legend(fontsize=7)
    plots.append(("PSNR against the registered reference", _png(fig)))

    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    ax.plot(x, [d.raw_resolution_px for d in result.doses], "o-", label="raw (repeats)")
    ax.plot(x, [d.raw_twin_resolution_px for d in result.doses], "o:", label="raw (twins)")
    ax.plot(x, [d.denoised_resolution_px for d in result.doses], "^-", label="denoised (repeats)")
    ref = result.reference_resolution_px
    ax.axhline(ref, color="k", lw=0.8, label="reference")
    ax.axhline(ref * (1 + targets.resolution_tolerance), color="k", lw=0.8, ls="--", label="target")
    _mark(ax, rec)
    _dose_axis(ax, x)
    ax.set(yscale="log", ylabel="FRC resolution (px, 1/7)")
    ax.legend(fontsize=7)
    plots.append(("Resolution (Fourier ring correlation, 1/7 threshold)", _png(fig)))

    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot()
    ax.plot(x, [d.risk_fraction for d in result.doses], "o-", c="tab:red", label="risk fraction")
    ax.axhline(targets.max_risk_fraction, color="tab:red", lw=0.8, ls="--", label="target")
    _dose_axis(ax, x)
    ax.set(ylabel="hallucination-risk fraction")
    twin = ax.twinx()
    twin.plot(x, [d.raw_snr_db for d in result.doses], "s-", c="tab:blue", label="raw SNR")
    twin.plot(
        x, [d.denoised_snr_db for d in result.doses], "^-", c="tab:purple", label="denoised SNR"
    )
    twin.set_ylabel("SNR (dB)")
    _mark(ax, rec)
    fig.legend(fontsize=7, loc="upper center", ncols=3)
    plots.append(("Hallucination risk and SNR", _png(fig)))

    fig = Figure(figsize=(6, 3.0))
    ax = fig.add_subplot()
    b = result.bleaching
    ax.plot(b.cumulative_dose, b.brightness, "o")
    ax.plot(
        b.cumulative_dose,
        np.exp(-b.rate_per_dose * b.cumulative_dose),
        "-",
        label=f"exp fit: {b.rate_per_dose:.2e} per unit dose",
    )
    ax.set(xlabel="cumulative dose before the SIM set", ylabel="brightness per dose (rel.)")
    ax.legend(fontsize=7)
    plots.append(("Photobleaching over the sweep", _png(fig)))
    return plots


def _crops(result: SweepResult) -> str:
    from matplotlib.figure import Figure

    n = len(result.doses)
    fig = Figure(figsize=(6, 2.0 * n + 0.4))
    axes = fig.subplots(n, 3, squeeze=False)
    for row, d in zip(axes, result.doses, strict=True):
        raw, den, risk = d.examples["raw"], d.examples["denoised"], d.examples["risk"]
        lo, hi = np.percentile(raw, (0.5, 99.5))
        row[0].imshow(raw, cmap="gray", vmin=lo, vmax=hi)
        lo, hi = np.percentile(den, (0.5, 99.5))
        row[1].imshow(den, cmap="gray", vmin=lo, vmax=hi)
        row[2].imshow(risk, cmap="magma", vmin=0, vmax=1)
        row[0].set_ylabel(d.point.label, fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, title in zip(axes[0], ("raw", "denoised", "risk"), strict=True):
        ax.set_title(title, fontsize=9)
    return _png(fig)


def _table(result: SweepResult, rec: Recommendation) -> str:
    head = (
        "<tr><th>dose</th><th>rel.</th><th>PSNR raw / Gauss / den (dB)</th><th>SSIM den</th>"
        "<th>res. raw / den (px)</th><th>risk</th><th>meets</th><th>beats Gaussian</th></tr>"
    )
    rows = []
    for d, c in zip(result.doses, rec.checks, strict=True):
        rows.append(
            f"<tr><td>{html.escape(d.point.label)}</td><td>{d.point.relative:.3f}</td>"
            f"<td>{d.psnr_raw:.1f} / {d.psnr_gaussian:.1f} / {d.psnr_denoised:.1f}</td>"
            f"<td>{d.ssim_denoised:.3f}</td><td>{d.raw_resolution_px:.2f} / "
            f"{d.denoised_resolution_px:.2f}</td><td>{d.risk_fraction:.4f}</td>"
            f"<td>{'yes' if c.meets else 'no'}</td><td>{'yes' if c.beats_gaussian else 'no'}"
            "</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def write_report(
    result: SweepResult, rec: Recommendation, targets: Targets, out_dir: str | Path
) -> Path:
    """Write ``report.html`` (plots embedded, no external files) and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = "".join(
        f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' "
        f"src='data:image/png;base64,{png}'>"
        for title, png in _curves(result, rec, targets)
    )
    params = {
        "targets": targets.as_dict(),
        **result.as_dict(),
    }
    params.pop("doses")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>sn2n-live tune report</title>
<style>body{{font-family:sans-serif;max-width:900px;margin:auto}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px}}
pre{{background:#f4f4f4;padding:8px;font-size:12px;overflow:auto}}</style></head><body>
<h1>Dose sweep: {html.escape(str(result.parameters.get("profile")))}</h1>
<p><b>{html.escape(rec.message)}</b></p>
<p>Reference: {html.escape(result.plan.reference.label)}, FRC resolution
{result.reference_resolution_px:.2f} px; bleaching {result.bleaching.rate_per_dose:.2e} per
unit dose ({result.bleaching.remaining:.1%} left after the sweep). Sweep took
{result.elapsed_s:.0f} s.</p>
{_table(result, rec)}
{sections}
<h2>Example crops (first frame of each dose; risk 0..1)</h2>
<img alt="crops" src="data:image/png;base64,{_crops(result)}">
<h2>Every parameter of the run</h2>
<pre>{html.escape(json.dumps(params, indent=2, default=str))}</pre>
</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path


def profile_with_dose(text: str, dose: DosePoint) -> str:
    """Return a profile's TOML text with ``[camera]`` exposure and laser power set to ``dose``.

    Only those two lines change (comments and layout are kept); missing keys are added
    right under ``[camera]``, and a missing ``[camera]`` table is appended.
    """
    values = {
        "exposure_ms": f"{dose.exposure_ms:g}",
        "laser_power_percent": f"{dose.power_percent:g}",
    }
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "[camera]"), None)
    if start is None:
        body = "\n".join(f"{k} = {v}" for k, v in values.items())
        return text.rstrip("\n") + f"\n\n[camera]\n{body}\n"
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")),
        len(lines),
    )
    for key, value in values.items():
        pattern = re.compile(rf"^\s*{key}\s*=")
        for i in range(start + 1, end):
            if pattern.match(lines[i]):
                comment = lines[i].partition("#")[2]
                lines[i] = f"{key} = {value}" + (f"  #{comment}" if comment else "")
                break
        else:
            lines.insert(start + 1, f"{key} = {value}")
            end += 1
    return "\n".join(lines) + "\n"
