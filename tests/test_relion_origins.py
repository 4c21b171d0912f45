"""Offsets against RELION's origins, on stacks `relion_project` made with known origins
(tests/data/relion_origins/README.md): the origin convention, the learned frame's offsets and psi,
and the origins canonicalize writes. No RELION is needed here."""
import os

import keras
import mrcfile
import numpy as np
import pytest
import tensorflow as tf

from data_pipeline.formats.star import (offsets_from_origins, particles_block, psi_degrees_to_angle,
                                        read_star, relion_origins)
from data_pipeline.preprocessing import Normalization
from data_pipeline.rotation import recentred, rotate
from rotinv_tf.evaluation import frame_aligned_errors_deg
from rotinv_tf.models.autoencoder import RotationInvariantAutoencoder
from rotinv_tf.pose.template_frame import OFFSET, TemplateFrame
from rotinv_tf.serving.export import export_saved_model
from rotinv_tf.serving.inference import canonicalize_particles
from tests.data_fixtures import correlations, load_module
from tests.test_canonicalize import OPTICS

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "relion_origins")
SIZE, PIXEL = 32, 2.0


def relion_stack(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images [n, 32, 32], psi [n] degrees, origins [n, 2] Å) of `name`.mrcs/.star, in stack
    order."""
    path = os.path.join(FIXTURE, f"{name}.star")
    table = particles_block(read_star(path), path)
    order = [int(image.split("@")[0]) - 1 for image in table.column("rlnImageName")]
    psi, origins = np.empty(len(order)), np.empty((len(order), 2))
    psi[order] = np.array(table.column("rlnAnglePsi"), float)
    for axis, column in enumerate(("rlnOriginXAngst", "rlnOriginYAngst")):
        origins[order, axis] = np.array(table.column(column), float)
    return mrcfile.read(os.path.join(FIXTURE, f"{name}.mrcs")).astype(np.float32), psi, origins


def normalised(images: np.ndarray) -> tf.Tensor:
    return tf.constant(((images - images.mean()) / images.std())[..., None])


def rms_pixels(found: np.ndarray, origins: np.ndarray) -> float:
    """RMS length of the difference of origins [n, 2] Å, in pixels."""
    return float(np.sqrt(np.mean(np.sum((found - origins) ** 2, axis=1)))) / PIXEL


def test_relion_puts_the_particle_centre_at_its_box_centre_minus_the_origin():
    """Noiseless projections at known psi and origins: moved back by the offsets that
    `offsets_from_origins` reads from their origins, each is RELION's unshifted psi = 0
    projection (its centre moved to ours, (N-1)/2) turned by psi about our centre. Without the
    half pixel between RELION's box centre N/2 and ours it fits worse, with the sign flipped
    not at all."""
    images, psi, origins = relion_stack("clean")
    unshifted = mrcfile.read(os.path.join(FIXTURE, "..", "relion", "projections.mrcs"))[:1]
    ours = recentred(unshifted[..., None], np.float32([[0.5, 0.5]]))  # psi 0 in ../relion
    expected = rotate(np.repeat(ours, len(images), 0),
                      psi_degrees_to_angle(psi).astype(np.float32)).numpy()[..., 0]

    def fit(offsets: np.ndarray) -> np.ndarray:
        centred = recentred(images[..., None], offsets.astype(np.float32)).numpy()[..., 0]
        return correlations(centred, expected)

    offsets = offsets_from_origins(origins, SIZE, PIXEL)
    assert fit(offsets).min() > 0.98
    assert fit(-origins / PIXEL).max() < fit(offsets).min() - 0.01  # no half pixel
    assert fit(1.0 - offsets).max() < 0.6  # the sign flipped
    np.testing.assert_allclose(relion_origins(offsets, SIZE, PIXEL), origins, atol=1e-9)
    assert np.abs(offsets).max() > 3  # the fixture's particles are well off centre


def test_the_learned_frame_finds_relions_origins_and_psi():
    """120 particles at SNR ~1, origins up to 4 px: started classically, the frame's offsets are
    RELION's origins to a fraction of a pixel and its angles are psi (up to the frame's own
    rotation); a frame that takes the particles as centred (and serves no offsets) gets
    neither."""
    images, psi, origins = relion_stack("origins")
    for max_shift, origin_rms, psi_error in ((5.0, 0.4, 2.0), (0.0, 1.5, 20.0)):
        frame = TemplateFrame(SIZE, num_angles=128, max_shift=max_shift)
        frame.start_classical(normalised(images))
        weights, grades = frame.assessment(normalised(images))
        assert (OFFSET in grades) == (max_shift > 0)
        offsets = grades[OFFSET].numpy() if OFFSET in grades else np.zeros((len(images), 2))
        found = relion_origins(offsets, SIZE, PIXEL)
        angles = frame.angles(weights)[0].numpy()
        errors = frame_aligned_errors_deg(psi_degrees_to_angle(psi), angles)
        good = max_shift > 0
        assert (rms_pixels(found, origins) < origin_rms) == good
        assert (np.mean(errors) < psi_error) == good


def test_canonicalize_writes_the_frames_offsets_as_relion_origins(tmp_path):
    """The stack alone (an MRC file: no angles, no origins) through a learned-frame SavedModel:
    the STAR's rlnOriginXAngst/YAngst are RELION's origins of the particles."""
    images, _, origins = relion_stack("origins")
    keras.utils.set_random_seed(0)
    model = RotationInvariantAutoencoder(SIZE, latent_dim=8, filters=8, frame="learned",
                                         frame_max_shift=5.0)
    normalization = Normalization(mean=float(images.mean()), std=float(images.std()),
                                  min=float(images.min()), max=float(images.max()))
    model.start_frame({"image": normalization.normalize(images[..., None])})
    saved_model = export_saved_model(model, normalization, SIZE, str(tmp_path / "sm"), "o")
    summary = canonicalize_particles(saved_model, os.path.join(FIXTURE, "origins.mrcs"),
                                     str(tmp_path / "c.mrcs"), str(tmp_path / "c.star"),
                                     optics={"pixel_size": PIXEL, **OPTICS})
    written = particles_block(read_star(summary.star), summary.star)
    found = np.stack([np.array(written.column(c), float)
                      for c in ("rlnOriginXAngst", "rlnOriginYAngst")], axis=1)
    assert rms_pixels(found, origins) < 0.4
    assert rms_pixels(found, np.zeros_like(origins)) > 2.0  # the test can fail


def test_committed_star_is_what_make_star_writes():
    make_star = load_module(os.path.join(FIXTURE, "make_star.py"), "make_star")
    psi, origins = make_star.particles()
    _, written_psi, written = relion_stack("origins")
    np.testing.assert_allclose(written_psi, psi, atol=1e-4)
    np.testing.assert_allclose(written, origins, atol=1e-4)
    assert make_star.SIZE == SIZE and make_star.PIXEL == PIXEL
    assert np.hypot(*(origins / PIXEL).T).max() <= make_star.MAX_ORIGIN


@pytest.mark.parametrize("size", [32, 33])
def test_origins_and_offsets_are_inverse_for_even_and_odd_boxes(size):
    offsets = np.array([[0.0, 0.0], [1.25, -3.5]])
    origins = relion_origins(offsets, size, [1.5, 2.0])
    np.testing.assert_allclose(offsets_from_origins(origins, size, [1.5, 2.0]), offsets)
    # RELION's centre is pixel N // 2: half a pixel past ours in an even box, ours in an odd one.
    np.testing.assert_allclose(origins[0], [0.75, 0.75] if size % 2 == 0 else [0.0, 0.0])
