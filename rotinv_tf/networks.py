"""The three networks of the method: a convolutional encoder, a DCGAN-style decoder and a WGAN
critic. Each is a functional `keras.Model` built for a fixed, even image size."""
import keras
from keras import layers


def _check_image_size(image_size: int) -> None:
    if image_size < 8 or image_size % 2:
        raise ValueError(f"image_size must be an even number >= 8, got {image_size}")


def _downsampling_stack(x, filters: int, depth: int, normalize: bool):
    """Strided 4x4 convolutions, doubling the filters at each halving of the resolution."""
    for i in range(depth):
        x = layers.Conv2D(filters * 2**i, 4, strides=2, padding="same", use_bias=not normalize)(x)
        if normalize:
            x = layers.BatchNormalization()(x)
        x = layers.LeakyReLU(0.2)(x)
    return x


def _num_halvings(image_size: int) -> int:
    """How many times the decoder doubles its resolution: twice when the size allows it."""
    return 2 if image_size % 4 == 0 else 1


def build_encoder(image_size: int, latent_dim: int, filters: int = 32) -> keras.Model:
    """Image [B, N, N, 1] -> latent [B, latent_dim]; slot 0 is the angle θ̂ in (-π, π].

    The angle is read from a 2-unit (cos, sin) head through atan2, so the prediction has no jump
    at ±π; the other latent_dim - 1 units are the content.
    """
    _check_image_size(image_size)
    if latent_dim < 2:
        raise ValueError(f"latent_dim must be >= 2 (one angle slot plus content), got {latent_dim}")
    images = keras.Input((image_size, image_size, 1), name="images")
    x = layers.Conv2D(filters, 3, padding="same")(images)
    x = layers.LeakyReLU(0.2)(x)
    x = _downsampling_stack(x, filters * 2, 2, normalize=True)
    x = layers.Flatten()(x)
    x = layers.Dense(8 * filters)(x)
    x = layers.LeakyReLU(0.2)(x)
    content = layers.Dense(latent_dim - 1, name="content")(x)
    direction = layers.Dense(2, name="direction")(x)
    angle = layers.Lambda(
        lambda d: keras.ops.arctan2(d[:, 1:2], d[:, 0:1]), name="angle")(direction)
    latent = layers.Concatenate(name="latent", dtype="float32")([angle, content])
    return keras.Model(images, latent, name="encoder")


def build_decoder(image_size: int, latent_dim: int, filters: int = 32) -> keras.Model:
    """Latent [B, latent_dim] (angle slot already zeroed) -> canonical image [B, N, N, 1]."""
    _check_image_size(image_size)
    halvings = _num_halvings(image_size)
    base = image_size // 2**halvings
    top = filters * 2**halvings
    latent = keras.Input((latent_dim,), name="latent")
    x = layers.Dense(base * base * top, use_bias=False)(latent)
    x = layers.BatchNormalization()(x)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.Reshape((base, base, top))(x)
    for i in range(halvings):
        x = layers.Conv2DTranspose(top // 2**(i + 1), 4, strides=2, padding="same",
                                   use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.LeakyReLU(0.2)(x)
    images = layers.Conv2D(1, 3, padding="same", dtype="float32", name="canonical_image")(x)
    return keras.Model(latent, images, name="decoder")


def build_critic(image_size: int, filters: int = 32) -> keras.Model:
    """Image [B, N, N, 1] -> unbounded score [B, 1]. No batch norm: the gradient penalty is taken
    per sample, which batch statistics would break."""
    _check_image_size(image_size)
    images = keras.Input((image_size, image_size, 1), name="images")
    x = layers.Conv2D(filters, 3, padding="same")(images)
    x = layers.LeakyReLU(0.2)(x)
    x = _downsampling_stack(x, filters * 2, 2, normalize=False)
    x = layers.Flatten()(x)
    score = layers.Dense(1, dtype="float32", name="score")(x)
    return keras.Model(images, score, name="critic")
