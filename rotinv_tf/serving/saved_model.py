"""Load an exported SavedModel (see `rotinv_tf.serving.export`) and run it on numpy batches.

Deliberately independent of the training code: only TensorFlow, numpy and the data_pipeline error
type, so evaluating or serving a SavedModel needs nothing but the folder itself.
"""
import json
import os

import numpy as np
import tensorflow as tf

from data_pipeline.ctf import CTF_FEATURES
from data_pipeline.errors import DataError
from rotinv_tf.serving.export import CONFIG_FILE, METADATA_FILE

SIGNATURE = "serving_default"
INPUT = "images"
OUTPUTS = ("canonical_image", "angle", "latent")
METADATA_PATH = os.path.join("assets", METADATA_FILE)
CONFIG_PATH = os.path.join("assets", CONFIG_FILE)  # how the model was trained, when known
_EXPECTED = (f"SavedModel has no {SIGNATURE} signature with input '{INPUT}' "
             f"float32 [batch, size, size, 1] and outputs {', '.join(OUTPUTS)}")


class ServingModel:
    """A loaded SavedModel's `serving_default` signature, with its image size, metadata and
    training config (`rotinv_tf.config` as a plain dict; empty for older exports)."""

    def __init__(self, path: str, loaded: object, image_size: int, metadata: dict,
                 config: dict | None = None):
        self.path = path
        self.image_size = image_size
        self.metadata = metadata
        self.config = config or {}
        self._loaded = loaded  # keeps the restored variables alive while the signature is used
        self._signature = loaded.signatures[SIGNATURE]
        self.outputs = tuple(self._signature.structured_outputs)  # the signature's outputs

    @property
    def ctf_correction(self) -> str:
        """The CTF correction the model was trained with (`none` for models without one)."""
        return self.metadata.get("ctf_correction") or "none"

    def predict(self, images: np.ndarray, particle_ctf: dict[str, np.ndarray] | None = None
                ) -> dict[str, np.ndarray]:
        """Images [batch, H, W] or [batch, H, W, 1] in raw pixel units -> numpy outputs.

        `particle_ctf` (`data_pipeline.ctf.CTF_FEATURES`, each [batch]) is required by a model
        with a CTF correction and ignored by others. Outputs: `canonical_image` [batch, H, W, 1]
        (raw units), `angle` [batch] (radians), `latent` [batch, D], `features` [batch, F] and,
        from a learned frame, `reference` [batch, H, W, 1] (`rotinv_tf.serving.export`).
        """
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[..., np.newaxis]
        size = self.image_size
        if images.ndim != 4 or images.shape[1:] != (size, size, 1):
            raise ValueError(f"{self.path}: expected images [batch, {size}, {size}(, 1)], "
                             f"got {images.shape}")
        inputs = {INPUT: tf.constant(images)}
        if self.ctf_correction != "none":
            if particle_ctf is None:
                raise ValueError(f"{self.path}: the model corrects the CTF "
                                 f"({self.ctf_correction}); it needs each particle's "
                                 f"{', '.join(CTF_FEATURES)}")
            inputs.update({name: tf.constant(np.asarray(particle_ctf[name], np.float32))
                           for name in CTF_FEATURES})
        outputs = self._signature(**inputs)
        served = {key: value.numpy() for key, value in outputs.items()}
        served.setdefault("features", served["latent"])  # older exports: the latent is theirs
        return served


def _read_json(path: str, relative: str) -> dict:
    """The JSON asset `relative` of the SavedModel `path` ({} if it has none)."""
    file_path = os.path.join(path, relative)
    if not os.path.isfile(file_path):
        return {}
    try:
        with open(file_path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(file_path, f"unreadable ({e})") from None


def load_serving_model(path: str) -> ServingModel:
    """Loads the SavedModel folder `path`; `DataError` if it is missing or lacks the signature."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DataError(path, "no such SavedModel folder")
    try:
        loaded = tf.saved_model.load(path)
    except (OSError, ValueError, tf.errors.OpError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(path, f"not a loadable SavedModel ({first_line})") from None
    signature = loaded.signatures.get(SIGNATURE)
    if signature is None:
        raise DataError(path, _EXPECTED)
    inputs = signature.structured_input_signature[1]
    spec = inputs.get(INPUT)
    outputs = signature.structured_outputs
    shape = spec.shape if spec is not None else None
    if (spec is None or spec.dtype != tf.float32 or shape.rank != 4 or shape[3] != 1
            or shape[1] is None or shape[1] != shape[2]
            or not isinstance(outputs, dict) or any(k not in outputs for k in OUTPUTS)):
        raise DataError(path, _EXPECTED)
    metadata = _read_json(path, METADATA_PATH)
    image_size = int(shape[1])
    if metadata.get("image_size", image_size) != image_size:
        raise DataError(path, f"metadata image_size {metadata['image_size']} does not match the "
                        f"signature's input size {image_size}")
    return ServingModel(path, loaded, image_size, metadata, _read_json(path, CONFIG_PATH))
