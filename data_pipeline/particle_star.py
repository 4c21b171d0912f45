"""The STAR file written for particles (`data_pipeline.particles`), as RELION 3.1+ reads it.

- `data_optics`: one row per optics group, complete: rlnOpticsGroup, rlnOpticsGroupName,
  rlnVoltage, rlnSphericalAberration, rlnAmplitudeContrast, rlnImagePixelSize and rlnImageSize
  (after resampling: pixel x `pixel_scale`, the new box), rlnImageDimensionality 2; an input's
  optics table keeps its other columns.
- `data_particles`: a STAR input's table keeps every row and column but those the layout replaces:
  RELION 3.0's per-particle optics columns (now in the optics table) and pixel origins (now
  rlnOriginXAngst/YAngst, which resampling leaves as they are); every particle gets its
  rlnOpticsGroup. Other inputs get rlnImageName, rlnOpticsGroup and their CTF and angle columns.
  The caller's columns (`columns`) are added, or replace the input's.
- Other blocks of a STAR input come before or after, as they were.

Rows are made batch by batch (`OutputStar.rows`), so a million particles' rows are never held in
memory.
"""
import dataclasses
import os
from typing import Callable, Sequence

import numpy as np

from data_pipeline.formats import star
from data_pipeline.particles import Particles

# Particle-table columns a RELION 3.0 file holds that the layout moves or converts.
REPLACED_COLUMNS = (star.IMAGE_PIXEL_SIZE, *star.OPTICS_COLUMNS, star.MAGNIFICATION,
                    star.DETECTOR_PIXEL_SIZE, *star.ORIGIN_PIXEL_COLUMNS)


@dataclasses.dataclass(frozen=True)
class OutputStar:
    """The output STAR file around its particle table."""

    before: dict[str, star.StarBlock]  # blocks written before the particle table
    table: str  # its block name
    columns: list[str]
    after: dict[str, star.StarBlock]  # blocks written after it
    base_row: Callable[[int], list[str]]  # a fresh copy of row i before the new values

    def rows(self, particles: Sequence[int], values: dict[str, list[str]]) -> list[list[str]]:
        """The rows of the 0-based `particles` (a batch's, or those of it kept) with `values`
        (column -> one value per row) filled in."""
        at = [self.columns.index(column) for column in values]
        rows = []
        for i, row_values in zip(particles, zip(*values.values())):
            row = self.base_row(i)
            for j, value in zip(at, row_values):
                row[j] = value
            rows.append(row)
        return rows


def relion_path(path: str) -> str:
    """How a written STAR file names `path` so that RELION finds it: relative to the working
    directory (a RELION project's root, which RELION resolves names from) when it lies below it,
    else absolute."""
    path = os.path.abspath(path)
    relative = os.path.relpath(path, os.getcwd())
    return path if relative.startswith(os.pardir) else relative


def optics_table(particles: Particles, image_size: int, pixel_scale: float) -> star.StarBlock:
    """The complete optics table (module docstring); every group's optics must be known
    (`Particles.check_optics`)."""
    particles.check_optics()
    source = (particles.blocks or {}).get("optics")
    if source is not None:
        block = dataclasses.replace(source, columns=list(source.columns),
                                    rows=[list(row) for row in source.rows])
    else:
        block = star.StarBlock(columns=[], rows=[[] for _ in particles.groups])
    groups = particles.groups
    values = {
        star.OPTICS_GROUP: [g.number for g in groups],
        star.OPTICS_GROUP_NAME: [g.name for g in groups],
        "rlnVoltage": [f"{g.voltage:g}" for g in groups],
        "rlnSphericalAberration": [f"{g.spherical_aberration:g}" for g in groups],
        "rlnAmplitudeContrast": [f"{g.amplitude_contrast:g}" for g in groups],
        star.IMAGE_PIXEL_SIZE: [f"{g.pixel_size * pixel_scale:.6f}" for g in groups],
        star.IMAGE_SIZE: [image_size] * len(groups),
        star.IMAGE_DIMENSIONALITY: [2] * len(groups)}
    for column, column_values in values.items():
        block.set_column(column, column_values)
    return block


def _particle_columns(particles: Particles) -> dict[str, np.ndarray]:
    """The values the layout computes per particle, as strings, by column."""
    computed = {star.OPTICS_GROUP: np.array([g.number for g in particles.groups])[
        particles.group_ids].astype(str)}
    if particles.origins is not None:
        for i, column in enumerate(star.ORIGIN_COLUMNS):
            computed[column] = np.char.mod("%.6f", particles.origins[:, i])
    if particles.blocks is None:  # a .cs or MRC input: its CTF and angles in RELION's columns
        if particles.defocus is not None:
            for i, column in enumerate(star.DEFOCUS_COLUMNS):
                computed[column] = np.char.mod("%.6f", particles.defocus[:, i])
        if particles.phase_shift is not None:
            computed[star.PHASE_SHIFT] = np.char.mod("%.6f", particles.phase_shift)
        if particles.psi is not None:
            computed[star.ANGLE_PSI] = np.char.mod("%.6f", particles.psi)
    return computed


def output_star(particles: Particles, image_size: int, pixel_scale: float,
                columns: list[str]) -> OutputStar:
    """The layout of the STAR file for `particles` (module docstring), whose table gains or
    replaces `columns` (filled in by `OutputStar.rows`)."""
    optics = optics_table(particles, image_size, pixel_scale)
    computed = _particle_columns(particles)
    if particles.blocks is None:
        kept_columns: list[str] = [star.IMAGE_NAME]
        kept_rows: Callable[[int], list[str]] = lambda row: [""]  # noqa: E731
        before, name, after = {}, "particles", {}
    else:
        source = star.particles_block(particles.blocks, particles.path)
        names = list(particles.blocks)
        at = next(i for i, n in enumerate(names) if particles.blocks[n] is source)
        before = {n: particles.blocks[n] for n in names[:at] if n != "optics"}
        after = {n: particles.blocks[n] for n in names[at + 1:] if n != "optics"}
        name = names[at] if names[at] else "particles"
        keep = [i for i, c in enumerate(source.columns)
                if c not in REPLACED_COLUMNS and c not in computed]
        kept_columns = [source.columns[i] for i in keep]
        kept_rows = lambda row: [source.rows[row][i] for i in keep]  # noqa: E731
    table = kept_columns + list(computed)
    table += [c for c in columns if c not in table]
    pad = [""] * (len(table) - len(kept_columns) - len(computed))
    return OutputStar({"optics": optics, **before}, name, table, after,
                      lambda row: kept_rows(row) + [v[row] for v in computed.values()] + pad)
