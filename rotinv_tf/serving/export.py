"""Export a trained model as a SavedModel in the layout TF Serving loads.

`export_saved_model` writes `<export_base>/<name>/<version>/` (`saved_model.pb`, `variables/`,
`assets/metadata.json`, tag `serve`), `<version>` being the next free integer so an export never
overwrites an older one and TF Serving picks up the newest. The folder is written under a temporary
name and renamed only when complete, so a failed export leaves nothing behind.

The served functions take and return RAW pixel values: the dataset's `Normalization` is applied
inside, around the model's contract methods (see docs/architecture.md).

Signatures (input `images`: float32 [batch, H, W, 1], dynamic batch; a model with a CTF correction
also takes each particle's CTF, the inputs `data_pipeline.ctf.CTF_FEATURES`, float32 [batch]):
- `serving_default` -> `canonical_image` float32 [batch, H, W, 1] (raw units), `angle` float32 [batch]
  (`data_pipeline/angles.py`: `images ≈ rotate(canonical_image, angle)`), `latent` float32
  [batch, D], `features` float32 [batch, F]: what to cluster and order particles by (a learned
  frame's `rotinv_tf.pose.frame_features`; the latent for other models); a learned frame also
  serves `reference` float32 [batch, H, W, 1] (raw units): its template of the particle's class,
  what `rotinv_tf.canonicalize` refines the angle against (the particle phase-flipped under a CTF
  correction, as the frame sees it), and its grades of each particle's class and angle
  (`rotinv_tf.pose.template_frame.CLASS_OUTPUTS`): `class_probabilities` float32 [batch, K],
  `assignment_probability`, `log_likelihood` and `flip_probability` float32 [batch], its `offset`
  float32 [batch, 2] (pixels, x along the columns, y down the rows: `data_pipeline.rotation`;
  `images ≈ rotate(canonical_image, angle)` moved by it), and `network_angle` float32 [batch],
  the encoder's own prediction where `angle` is the frame's.
  Exports from before these outputs, and other models, serve none of them.
- `encode` -> `latent`, `angle`.

`assets/metadata.json` holds the image size and normalisation statistics, so consumers (evaluation,
`rotinv_tf.canonicalize`) need neither the training code nor the dataset to use the model;
`assets/config.json` the training run's config (data, model settings, schedule).
"""
import json
import os
import tempfile

import keras
import tensorflow as tf

from data_pipeline.atomic import atomic_path
from data_pipeline.ctf import CTF_FEATURES
from data_pipeline.preprocessing import Normalization
from rotinv_tf.config import CONFIG_FILE  # the training run's config, in assets/ when known
from rotinv_tf.pose.template_frame import CLASS_OUTPUTS, OFFSET

METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1
SERVING_OUTPUTS = ("canonical_image", "angle", "latent")
ENCODE_OUTPUTS = ("latent", "angle")


def _require(outputs: dict, keys: tuple[str, ...], method: str) -> None:
    missing = [k for k in keys if k not in outputs]
    if missing:
        raise ValueError(f"model.{method} must return a dict with keys {', '.join(keys)}; "
                         f"missing {', '.join(missing)}")


class _ServingModule(tf.Module):
    """The exported object: two tf.functions over the model plus the metadata asset."""

    def __init__(self, model: keras.Model, normalization: Normalization, image_size: int,
                 asset_paths: list[str], jit_compile: bool = False):
        super().__init__(name="rotinv_serving")
        spec = tf.TensorSpec([None, image_size, image_size, 1], tf.float32, name="images")
        if uses_ctf(model):
            # A CTF model also takes each particle's CTF: inputs named by `CTF_FEATURES` (the
            # specs' names are the signatures' input names).
            ctf_specs = [tf.TensorSpec([None], tf.float32, name=n) for n in CTF_FEATURES]

            @tf.function(input_signature=[spec, *ctf_specs], jit_compile=jit_compile)
            def serve(images, *ctf_values) -> dict:
                return serve_outputs(images, dict(zip(CTF_FEATURES, ctf_values)))

            @tf.function(input_signature=[spec, *ctf_specs], jit_compile=jit_compile)
            def encode(images, *ctf_values) -> dict:
                return encode_outputs(images, dict(zip(CTF_FEATURES, ctf_values)))
        else:
            @tf.function(input_signature=[spec], jit_compile=jit_compile)
            def serve(images: tf.Tensor) -> dict:
                return serve_outputs(images, None)

            @tf.function(input_signature=[spec], jit_compile=jit_compile)
            def encode(images: tf.Tensor) -> dict:
                return encode_outputs(images, None)

        def ctf_argument(particle_ctf: dict | None) -> dict:
            return {} if particle_ctf is None else {"particle_ctf": particle_ctf}

        def serve_outputs(images: tf.Tensor, particle_ctf: dict | None) -> dict:
            out = model.canonicalize(normalization.normalize(images), **ctf_argument(particle_ctf))
            _require(out, SERVING_OUTPUTS, "canonicalize")
            served = {
                "canonical_image": normalization.denormalize(out["canonical_image"]),
                "angle": tf.reshape(tf.cast(out["angle"], tf.float32), [-1]),
                "latent": tf.cast(out["latent"], tf.float32),
                "features": tf.cast(out.get("features", out["latent"]), tf.float32),
            }
            if "reference" in out:
                served["reference"] = normalization.denormalize(
                    tf.cast(out["reference"], tf.float32))
            if "network_angle" in out:
                served["network_angle"] = tf.reshape(tf.cast(out["network_angle"], tf.float32),
                                                     [-1])
            served.update({name: tf.cast(out[name], tf.float32)
                           for name in (*CLASS_OUTPUTS, OFFSET) if name in out})
            return served

        def encode_outputs(images: tf.Tensor, particle_ctf: dict | None) -> dict:
            out = model.encode(normalization.normalize(images), **ctf_argument(particle_ctf))
            _require(out, ENCODE_OUTPUTS, "encode")
            return {"latent": tf.cast(out["latent"], tf.float32),
                    "angle": tf.reshape(tf.cast(out["angle"], tf.float32), [-1])}

        self.serve = serve
        self.encode = encode
        self.assets = [tf.saved_model.Asset(path) for path in asset_paths]
        # The functions capture the model's variables; the SavedModel must track them.
        captured = {}
        for fn in (serve, encode):
            for variable in fn.get_concrete_function().variables:
                captured[id(variable)] = variable
        self.model_variables = list(captured.values())


def uses_ctf(model: keras.Model) -> bool:
    """Whether the model takes each particle's CTF (a CTF correction other than `none`)."""
    return getattr(model, "uses_ctf", False)


def _mode_name(model: keras.Model, kind: str, default: str | None) -> str | None:
    """The name of the model's `kind` mode (`frame`, `correction`), `default` for a model
    without one."""
    mode = getattr(model, kind, None)
    return default if mode is None else mode.name


def next_version(model_dir: str) -> int:
    """1 + the highest integer-named version folder in `model_dir` (1 if there is none)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(n) for n in os.listdir(model_dir)
                if n.isdigit() and os.path.isdir(os.path.join(model_dir, n))]
    return max(versions, default=0) + 1


def export_saved_model(model: keras.Model, normalization: Normalization, image_size: int,
                       export_base: str, name: str, config_json: str | None = None,
                       jit_compile: bool = False) -> str:
    """Exports `model` to `export_base/name/<next version>/` and returns that folder.

    `config_json`: the training run's config (`rotinv_tf.config.Config.to_json`), written as
    `assets/config.json` so the model says how it was trained.

    `model` follows the contract of docs/architecture.md (`canonicalize` and `encode` on normalised
    images) and must be built; `image_size` is the side of the square images it takes.
    `jit_compile`: the served functions are compiled with XLA when loaded (once per batch size).
    """
    if not name or os.sep in name or name in (".", ".."):
        raise ValueError(f"export name must be a plain folder name, got {name!r}")
    if int(image_size) <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    image_size = int(image_size)
    model_dir = os.path.join(os.path.abspath(export_base), name)
    created_model_dir = not os.path.isdir(model_dir)
    version_dir = os.path.join(model_dir, str(next_version(model_dir)))
    metadata = {
        "format_version": FORMAT_VERSION,
        "image_size": image_size,
        "normalization": json.loads(normalization.to_json()),
        "model_class": type(model).__name__,
        # How the model's canonical frame was defined (autoencoder only): "supervised" by the
        # data's canonical images or angles, "learned" by its EM template
        # (rotinv_tf.models.frames).
        "frame": _mode_name(model, "frame", None),
        # The CTF correction it was trained with (rotinv_tf.models.ctf_corrections); for one
        # other than "none" the signatures also take each particle's
        # data_pipeline.ctf.CTF_FEATURES.
        "ctf_correction": _mode_name(model, "correction", "none"),
    }
    try:
        with tempfile.TemporaryDirectory() as scratch:
            names = [METADATA_FILE] + ([CONFIG_FILE] if config_json is not None else [])
            module = _ServingModule(model, normalization, image_size,
                                    [os.path.join(scratch, file_name) for file_name in names],
                                    jit_compile)
            # The outputs each signature serves, as traced (a learned frame's grades included).
            metadata["signatures"] = {
                name: list(function.get_concrete_function().structured_outputs)
                for name, function in (("serving_default", module.serve),
                                       ("encode", module.encode))}
            texts = {METADATA_FILE: json.dumps(metadata, indent=2), CONFIG_FILE: config_json}
            for file_name in names:
                with open(os.path.join(scratch, file_name), "w") as f:
                    f.write(texts[file_name])
            with atomic_path(version_dir, directory=True) as tmp:
                tf.saved_model.save(module, tmp, signatures={
                    "serving_default": module.serve.get_concrete_function(),
                    "encode": module.encode.get_concrete_function(),
                })
    except BaseException:
        if created_model_dir and os.path.isdir(model_dir) and not os.listdir(model_dir):
            os.rmdir(model_dir)
        raise
    return version_dir
