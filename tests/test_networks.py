"""The two architectures of `rotinv_tf.models.networks`: shapes, sizes, the multiply-add count."""
import keras
import numpy as np
import pytest
from keras import layers

from rotinv_tf.models.networks import build_networks, multiply_adds


@pytest.mark.parametrize("architecture", ["conv", "paper"])
@pytest.mark.parametrize("size", [28, 40])
def test_networks_map_images_to_latents_and_back(architecture, size):
    encoder, decoder, critic = build_networks(architecture, size, 8, filters=4, critic_filters=2)
    images = np.zeros((2, size, size, 1), np.float32)
    latent = encoder(images)
    assert latent.shape == (2, 8)
    assert decoder(latent).shape == (2, size, size, 1)
    assert critic(images).shape == (2, 1)


def test_paper_networks_have_the_authors_sizes():
    encoder, decoder, critic = build_networks("paper", 40, 32)
    dense_units = [l.units for l in encoder.layers if isinstance(l, layers.Dense)]
    assert dense_units[:3] == [512, 256, 128] and encoder.layers[1].output.shape[1] == 1600
    assert [l.output.shape[1:] for l in decoder.layers if isinstance(l, layers.Cropping2D)] == [
        (7, 7, 32), (14, 14, 16)]
    last = decoder.layers[-2]  # the sub-pixel form of their 16 -> 1, 18x18 transposed convolution
    assert last.output.shape[1:] == (20, 20, 4) and last.kernel.shape == (9, 9, 16, 4)
    assert [l.filters for l in critic.layers if isinstance(l, layers.Conv2D)] == [2, 4, 8]
    assert critic.layers[-1].kernel.shape == (200, 1)  # 5x5x8, as theirs at 40x40


def test_paper_architecture_does_a_tenth_of_the_conv_work():
    conv = sum(multiply_adds(m) for m in build_networks("conv", 40, 32))
    paper = sum(multiply_adds(m) for m in build_networks("paper", 40, 32))
    assert 5 < conv / paper < 20


def test_multiply_adds_of_a_hand_counted_model():
    images = keras.Input((8, 8, 1))
    x = layers.Conv2D(3, 3, padding="same")(images)  # 64 pixels x 9 x 1 x 3
    x = layers.Conv2DTranspose(2, 4, strides=2, padding="same")(x)  # 64 inputs x 16 x 3 x 2
    x = layers.Flatten()(x)
    x = layers.Dense(5)(x)  # 16 x 16 x 2 x 5
    assert multiply_adds(keras.Model(images, x)) == 64 * 27 + 64 * 96 + 512 * 5


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="architecture"):
        build_networks("resnet", 40, 32)
    with pytest.raises(ValueError, match="26"):
        build_networks("paper", 24, 32)


def test_subpixel_layer_is_a_stride_2_transposed_convolution():
    """Weights of a transposed convolution rearranged into the sub-pixel layer give its outputs."""
    _, decoder, _ = build_networks("paper", 28, 8)
    features = np.random.default_rng(0).normal(size=(2, 14, 14, 16)).astype(np.float32)
    transposed = layers.Conv2DTranspose(1, 6, strides=2, padding="valid", use_bias=False)
    expected = transposed(features)[:, 2:-2, 2:-2].numpy()
    kernel = transposed.kernel.numpy()[::-1, ::-1, 0, :]  # [6, 6, 16], correlation order
    sub = decoder.layers[-2]
    weights = np.zeros(sub.kernel.shape, np.float32)  # [3, 3, 16, 4]: phase (ry, rx) -> 2ry + rx
    for ry in range(2):
        for rx in range(2):
            weights[:, :, :, 2 * ry + rx] = kernel[1 - ry::2, 1 - rx::2]
    sub.set_weights([weights, np.zeros(4, np.float32)])
    padded = decoder.layers[-3](features)
    got = keras.ops.depth_to_space(sub(padded), 2).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_paper_networks_match_the_pytorch_reference():
    torch = pytest.importorskip("torch")
    from benchmarks import reference_pytorch

    reference = reference_pytorch.ReferenceModel(40, 32)
    ours = build_networks("paper", 40, 32)
    for mine, theirs in zip(ours, reference.networks[:3]):
        assert mine.count_params() - _batch_norm_statistics(mine) == pytest.approx(
            sum(p.numel() for p in theirs.parameters()), abs=200)
    assert isinstance(reference.train_step(0, *_reference_batch(torch)), torch.Tensor)


def _batch_norm_statistics(model) -> int:
    return sum(l.moving_mean.shape[0] * 2 for l in model.layers
               if isinstance(l, layers.BatchNormalization))


def _reference_batch(torch):
    return torch.rand(4, 1, 40, 40), torch.rand(4), torch.rand(4, 1, 40, 40)
