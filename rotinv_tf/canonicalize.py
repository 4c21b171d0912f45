"""Canonicalize a particle stack with an exported SavedModel (see `rotinv_tf.serving.inference`).

    python -m rotinv_tf.canonicalize --saved_model=saved_models/<name>/<version> \\
        --input=particles.mrcs --output=canonical.mrcs --star=angles.star \\
        [--batch_size=256] [--resample] [--refine=true|false] [--refine_max_shift=3] \\
        [--refine_window_degrees=10] [--refine_step_degrees=0.5] [--select_classes=1,3]

`--input` is an MRC stack, a RELION STAR file or a cryoSPARC `.cs` particle file
(`data_pipeline.particles`); `--pixel_size`, `--voltage`, `--spherical_aberration` and
`--amplitude_contrast` give what it lacks (a bare stack has no optics; the output STAR needs them).
Writes the canonical images (MRC stack) and a RELION 3.1+ STAR file with `rlnAnglePsi` in
degrees, refined by a local search against a reference per particle, a learned frame's class template or else the
particle's canonical image (`rotinv_tf.serving.inference`; `--refine=false`: the model's angle as
it is). The STAR file's top comments say which, and how the model was trained: its data and
objective, from the SavedModel's config.json.
A learned frame that serves its classes (`rotinv_tf.serving.classes`) also writes each particle's
rlnClassNumber, rlnMaxValueProbDistribution, rlnLogLikeliContribution and
rlnRotinvFlipProbability, and beside the STAR file `<stem>_classes.mrcs` (class averages) and
`<stem>_model.star`, as RELION's 2D classification does; `--select_classes=1,3` keeps only those
classes' particles.
Progress goes to stderr, that training line and a one-line summary to stdout. Bad input, or an
output path that cannot be written (checked before the model loads), prints one `error: ...`
line and exits with status 2, leaving no output.
"""
import sys
import time

from absl import flags

from data_pipeline.cli import run
from data_pipeline.particles import OPTICS_NAMES
from rotinv_tf.serving.classes import parse_selection
from rotinv_tf.serving.inference import (REFINE_STEP_DEGREES, REFINE_WINDOW_DEGREES,
                                         Refinement, canonicalize_particles)

FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model", None, "SavedModel version folder: saved_models/<name>/<version>.")
flags.DEFINE_string("input", None, "Particles: an MRC stack (.mrcs/.mrc), a RELION STAR file or a "
                    "cryoSPARC .cs file.")
flags.DEFINE_string("output", None, "Output MRC stack of canonical images.")
flags.DEFINE_string("star", None, "Output STAR file (rlnImageName, rlnAnglePsi in degrees).")
flags.DEFINE_integer("batch_size", 256, "Particles per model call.", lower_bound=1)
flags.DEFINE_boolean("resample", False,
                     "Fourier-crop/pad particles whose size differs from the model's.")
flags.DEFINE_boolean("refine", True,
                     "Refine each network angle by a local search (--refine_window_degrees, "
                     "--refine_step_degrees) against a reference: a learned frame's class "
                     "template, otherwise the particle's canonical image.")
flags.DEFINE_float("refine_window_degrees", REFINE_WINDOW_DEGREES,
                   "With --refine, search within +- this many degrees of the network's angle.")
flags.DEFINE_float("refine_step_degrees", REFINE_STEP_DEGREES,
                   "With --refine, the search's angle step in degrees (0 < step <= 90).")
flags.DEFINE_integer("refine_max_shift", 0,
                     "With --refine, also search shifts of up to this many pixels (sub-pixel; "
                     "added to a learned frame's offsets, written as rlnOriginXAngst/YAngst).",
                     lower_bound=0)
flags.DEFINE_float("pixel_size", None, "Pixel size (Å) of the input particles, for every optics "
                   "group: where the input has none (an MRC header of 0) or a wrong one.")
flags.DEFINE_float("voltage", None, "Voltage (kV), for every optics group (a bare stack has none).")
flags.DEFINE_float("spherical_aberration", None, "Spherical aberration Cs (mm), for every "
                   "optics group.")
flags.DEFINE_float("amplitude_contrast", None, "Amplitude contrast (fraction), for every optics "
                   "group.")
flags.DEFINE_string("select_classes", None, "Comma-separated 1-based classes whose particles are "
                    "written (a model with classes, a learned frame's), e.g. 1,3; default all.")


@flags.validator("select_classes", "expected comma-separated class numbers from 1, e.g. 1,3")
def _valid_selection(text: str | None) -> bool:
    try:
        return text is None or bool(parse_selection(text))
    except ValueError:
        return False


@flags.multi_flags_validator(("refine_window_degrees", "refine_step_degrees"))
def _valid_refinement(values: dict) -> bool:
    problems = Refinement(values["refine_window_degrees"], values["refine_step_degrees"],
                          max_shift=0).problems()
    if problems:
        raise flags.ValidationError("; ".join(problems))
    return True


for _name in ("saved_model", "input", "output", "star"):
    flags.mark_flag_as_required(_name)


class _ProgressBar:
    """A one-line progress bar with particles/s on stderr, redrawn at most 10 times a second."""

    def __init__(self, width: int = 30):
        self.width = width
        self.start = time.perf_counter()
        self.last_draw = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self.last_draw < 0.1:
            return
        self.last_draw = now
        filled = self.width * done // total
        rate = done / max(now - self.start, 1e-9)
        end = "\n" if done == total else ""
        print(f"\r[{'=' * filled}{'.' * (self.width - filled)}] {done}/{total} particles, "
              f"{rate:.0f} particles/s", end=end, file=sys.stderr, flush=True)


def main(argv: list[str]) -> None:
    del argv
    summary = canonicalize_particles(FLAGS.saved_model, FLAGS.input, FLAGS.output, FLAGS.star,
                                     batch_size=FLAGS.batch_size, resample=FLAGS.resample,
                                     progress=_ProgressBar(), refine=FLAGS.refine,
                                     refine_max_shift=FLAGS.refine_max_shift,
                                     refine_window_degrees=FLAGS.refine_window_degrees,
                                     refine_step_degrees=FLAGS.refine_step_degrees,
                                     optics={name: FLAGS[name].value for name in OPTICS_NAMES},
                                     select_classes=(None if FLAGS.select_classes is None
                                                     else parse_selection(FLAGS.select_classes)))
    print(summary.training)
    for note in summary.notes:
        print(f"note: {note}")
    classes = (f", {summary.classes}, {summary.model_star}, {summary.particles_star}"
               if summary.classes else "")
    print(f"canonicalized {summary.particles} particles in {summary.seconds:.2f} s "
          f"({summary.particles_per_second:.0f} particles/s): {summary.output}, "
          f"{summary.star}{classes}, {summary.overview}")


if __name__ == "__main__":
    run(main)
