"""SavedModel export: TF Serving layout, signatures, and reloading without the project's code.

Most tests export the real `RotationInvariantAutoencoder` (untrained: the numbers only have to
survive the round trip); one checks a generic contract model, and the failure tests break one.
"""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.contract_models import TinyContractModel, built
from data_pipeline.errors import DataError
from data_pipeline.preprocessing import Normalization
from rotinv_tf.models.autoencoder import RotationInvariantAutoencoder
from rotinv_tf.serving.export import export_saved_model
from rotinv_tf.serving.saved_model import load_serving_model

SIZE = 16
# Raw pixel values far from the training range, so a missing (de)normalisation shows.
NORMALIZATION = Normalization(mean=180.0, std=40.0, min=100.0, max=300.0)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def raw_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(100, 300, (n, SIZE, SIZE, 1)).astype(np.float32)


def expected_outputs(model, images: np.ndarray) -> dict[str, np.ndarray]:
    """What the served signature must return: the contract method wrapped in the normalisation."""
    out = model.canonicalize(NORMALIZATION.normalize(images))
    return {"canonical_image": NORMALIZATION.denormalize(out["canonical_image"]).numpy(),
            "angle": out["angle"].numpy(), "latent": out["latent"].numpy()}


def assert_outputs_close(actual: dict, expected: dict) -> None:
    for key in ("canonical_image", "angle", "latent"):
        assert actual[key].shape == expected[key].shape, key
        np.testing.assert_allclose(actual[key], expected[key], atol=1e-4, rtol=0, err_msg=key)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return built(RotationInvariantAutoencoder(SIZE, latent_dim=8, filters=8), SIZE)


@pytest.fixture(scope="module")
def tiny():
    return built(TinyContractModel(SIZE, latent_dim=4), SIZE)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory) -> str:
    return export_saved_model(model, NORMALIZATION, SIZE, str(tmp_path_factory.mktemp("m")), "tiny")


def test_versions_count_up_in_tf_serving_layout(model, tmp_path):
    first = export_saved_model(model, NORMALIZATION, SIZE, str(tmp_path), "digits")
    second = export_saved_model(model, NORMALIZATION, SIZE, str(tmp_path), "digits")
    assert first == str(tmp_path / "digits" / "1")
    assert second == str(tmp_path / "digits" / "2")
    assert sorted(os.listdir(tmp_path / "digits")) == ["1", "2"]  # no temporary folders left
    for path in (first, second):
        assert os.path.isfile(os.path.join(path, "saved_model.pb"))
        assert os.path.isdir(os.path.join(path, "variables"))
    with open(os.path.join(second, "assets", "metadata.json")) as f:
        metadata = json.load(f)
    assert metadata["image_size"] == SIZE
    assert Normalization(**metadata["normalization"]) == NORMALIZATION


def test_saved_model_cli_lists_both_signatures(exported):
    shown = subprocess.run(["saved_model_cli", "show", "--dir", exported, "--all"], env=ENV,
                           capture_output=True, text=True, check=True).stdout
    serving = shown.split("signature_def['serving_default']:")[1].split("signature_def[")[0]
    encode = shown.split("signature_def['encode']:")[1].split("signature_def[")[0]
    assert "inputs['images']" in serving and f"shape: (-1, {SIZE}, {SIZE}, 1)" in serving
    for output in ("canonical_image", "angle", "latent"):
        assert f"outputs['{output}']" in serving
    assert "inputs['images']" in encode
    assert "outputs['latent']" in encode and "outputs['angle']" in encode
    assert "outputs['canonical_image']" not in encode


def test_saved_model_cli_run_returns_the_outputs(model, exported, tmp_path):
    images = raw_images(3)
    np.save(tmp_path / "in.npy", images)
    subprocess.run(["saved_model_cli", "run", "--dir", exported, "--tag_set", "serve",
                    "--signature_def", "serving_default", "--inputs", f"images={tmp_path}/in.npy",
                    "--outdir", str(tmp_path / "out")], env=ENV, capture_output=True, check=True)
    actual = {k: np.load(tmp_path / "out" / f"{k}.npy")
              for k in ("canonical_image", "angle", "latent")}
    assert_outputs_close(actual, expected_outputs(model, images))


_ISOLATED_LOAD = """
import importlib, sys
import numpy as np
# An installed project (pip install -e .) stays importable even under -I: block it outright.
for project_package in ("rotinv_tf", "data_pipeline"):
    sys.modules[project_package] = None
    try:
        importlib.import_module(project_package)
    except ImportError:
        pass
    else:
        sys.exit(project_package + " is importable; the test would prove nothing")
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
serve = loaded.signatures["serving_default"]
for name in sys.argv[2:]:
    outputs = serve(images=tf.constant(np.load(name)))
    np.savez(name + ".out.npz", **{k: v.numpy() for k, v in outputs.items()})
"""


def test_reloads_without_the_project_code_with_the_same_numbers(model, exported, tmp_path):
    inputs = []
    for batch in (1, 37):
        inputs.append(str(tmp_path / f"batch{batch}.npy"))
        np.save(inputs[-1], raw_images(batch, seed=batch))
    # -I: no PYTHONPATH, no user site, no script/cwd on sys.path; cwd is outside the repository.
    result = subprocess.run([sys.executable, "-I", "-c", _ISOLATED_LOAD, exported, *inputs],
                            cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in inputs:
        actual = dict(np.load(name + ".out.npz"))
        assert_outputs_close(actual, expected_outputs(model, np.load(name)))


def test_xla_compiled_serving_gives_the_same_numbers(model, tmp_path):
    path = export_saved_model(model, NORMALIZATION, SIZE, str(tmp_path), "xla", jit_compile=True)
    images = raw_images(5)
    assert_outputs_close(load_serving_model(path).predict(images), expected_outputs(model, images))


def test_any_contract_model_round_trips(tiny, tmp_path):
    served = load_serving_model(export_saved_model(tiny, NORMALIZATION, SIZE, str(tmp_path), "t"))
    images = raw_images(4)
    assert_outputs_close(served.predict(images), expected_outputs(tiny, images))
    assert served.metadata["model_class"] == "TinyContractModel"


def test_preprocessing_is_inside_raw_units_in_and_out(model, exported):
    served = load_serving_model(exported)
    assert served.image_size == SIZE
    images = raw_images(5)
    actual = served.predict(images[..., 0])  # [B, H, W] is accepted too
    assert_outputs_close(actual, expected_outputs(model, images))
    # Feeding raw pixels to the bare model gives something else: the normalisation does matter.
    bare = model.canonicalize(images)["latent"].numpy()
    assert np.abs(bare - actual["latent"]).max() > 1e-2
    # Raw units out: the canonical image is on the raw scale, not the [0, 1] training scale.
    normalised = model.canonicalize(NORMALIZATION.normalize(images))["canonical_image"].numpy()
    np.testing.assert_allclose(actual["canonical_image"], normalised * 200.0 + 100.0, atol=1e-3)


class _NoEncode(TinyContractModel):
    encode = None


class _MissingLatent(TinyContractModel):
    def canonicalize(self, images):
        out = super().canonicalize(images)
        return {"canonical_image": out["canonical_image"], "angle": out["angle"]}


@pytest.mark.parametrize("model_class", [_NoEncode, _MissingLatent])
def test_failed_export_leaves_nothing(model_class, tiny, tmp_path):
    broken = model_class(SIZE)
    broken.encoder, broken.decoder = tiny.encoder, tiny.decoder
    with pytest.raises((TypeError, ValueError)):
        export_saved_model(broken, NORMALIZATION, SIZE, str(tmp_path), "broken")
    assert os.listdir(tmp_path) == []
    # An existing model folder keeps its versions and gains no temporary folder.
    export_saved_model(tiny, NORMALIZATION, SIZE, str(tmp_path), "broken")
    with pytest.raises((TypeError, ValueError)):
        export_saved_model(broken, NORMALIZATION, SIZE, str(tmp_path), "broken")
    assert os.listdir(tmp_path / "broken") == ["1"]


def test_wrong_image_size_fails_without_leaving_a_folder(model, tmp_path):
    with pytest.raises(ValueError):
        export_saved_model(model, NORMALIZATION, SIZE + 4, str(tmp_path), "tiny")
    assert os.listdir(tmp_path) == []


def test_saved_model_without_the_signature_is_a_data_error(tmp_path):
    module = tf.Module()
    module.predict = tf.function(lambda x: {"y": x * 2.0},
                                 input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "other"),
                        signatures={"serving_default": module.predict.get_concrete_function()})
    with pytest.raises(DataError, match="no serving_default signature with input 'images'"):
        load_serving_model(str(tmp_path / "other"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a loadable SavedModel"):
        load_serving_model(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="no such SavedModel folder"):
        load_serving_model(str(tmp_path / "missing"))
