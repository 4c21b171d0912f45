"""The three networks of the method: an encoder, a DCGAN-style decoder and a WGAN critic, in two
architectures (`build_networks`). Each is a functional `keras.Model` built for a fixed, even image
size.

- `conv`: a convolutional encoder at full resolution, a decoder from (N/4)² x 4·filters and a
  critic of `critic_filters` channels.
- `paper`: the authors' networks at their sizes: an MLP encoder N²→512→256→128, a DCGAN decoder from
  4x4x64 (transposed convolutions 64→32→16→1 with their kernels, strides and paddings) and a critic
  of 2/4/8 channels (5x5, stride 2). The critic has no batch norm, as ours: the gradient penalty is
  taken per sample. The decoder's last layer is computed as a sub-pixel convolution (the same
  maps, a faster path on a CPU). A twelfth to a sixteenth of `conv`'s multiply-adds
  (`multiply_adds`). At equal CPU time it won on the supervised benchmarks and in the learned
  frame (README, issue 12), so the configs for boxes of its sizes set it; `conv` stays the
  default as it takes any box size.
"""
import keras
from keras import layers

from data_pipeline.settings import raise_problems

ARCHITECTURES = ("conv", "paper")
# The boxes `light_architecture` gives the authors' networks: from the smallest their decoder
# makes to 64 px (its last kernel, N - 22 pixels, grows with the box; larger ones are untried).
PAPER_BOXES = (26, 64)


def light_architecture(image_size: int) -> str:
    """The lighter networks for boxes of `image_size` pixels (`architecture=auto`): the authors'
    where their box range `PAPER_BOXES` holds it (in the learned frame, psi as conv's at a third
    of the time: benchmarks/README.md, learned-frame speed), else conv."""
    low, high = PAPER_BOXES
    return "paper" if low <= image_size <= high else "conv"


def image_size_problems(architecture: str, image_size: int) -> list[str]:
    """What makes boxes of `image_size` pixels unusable for `architecture`'s networks (the config
    checks a simulation's box with this, training a stack's; the builders refuse them)."""
    if image_size < 8 or image_size % 2:
        return ["the autoencoder needs an even box size of at least 8 pixels"]
    if architecture == "paper" and image_size < 26:
        return ["the paper architecture's decoder needs a box of at least 26 pixels"]
    return []


def check_image_size(image_size: int, architecture: str = "conv") -> None:
    """ValueError for an image size `architecture`'s networks cannot take."""
    raise_problems([f"image_size {image_size}: {problem}"
                    for problem in image_size_problems(architecture, image_size)])


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
    images = _encoder_input(image_size, latent_dim)
    x = layers.Conv2D(filters, 3, padding="same")(images)
    x = layers.LeakyReLU(0.2)(x)
    x = _downsampling_stack(x, filters * 2, 2, normalize=True)
    x = layers.Flatten()(x)
    x = layers.Dense(8 * filters)(x)
    x = layers.LeakyReLU(0.2)(x)
    return keras.Model(images, _latent_heads(x, latent_dim), name="encoder")


def _encoder_input(image_size: int, latent_dim: int) -> keras.KerasTensor:
    check_image_size(image_size)
    if latent_dim < 2:
        raise ValueError(f"latent_dim must be >= 2 (one angle slot plus content), got {latent_dim}")
    return keras.Input((image_size, image_size, 1), name="images")


def _latent_heads(x: keras.KerasTensor, latent_dim: int) -> keras.KerasTensor:
    """Features -> latent [B, latent_dim]: slot 0 the angle (atan2 of a (cos, sin) head), then the
    latent_dim - 1 content units."""
    content = layers.Dense(latent_dim - 1, name="content")(x)
    direction = layers.Dense(2, name="direction")(x)
    angle = layers.Lambda(
        lambda d: keras.ops.arctan2(d[:, 1:2], d[:, 0:1]), name="angle")(direction)
    return layers.Concatenate(name="latent", dtype="float32")([angle, content])


def build_decoder(image_size: int, latent_dim: int, filters: int = 32) -> keras.Model:
    """Latent [B, latent_dim] (angle slot already zeroed) -> canonical image [B, N, N, 1]."""
    check_image_size(image_size)
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
    check_image_size(image_size)
    images = keras.Input((image_size, image_size, 1), name="images")
    x = layers.Conv2D(filters, 3, padding="same")(images)
    x = layers.LeakyReLU(0.2)(x)
    x = _downsampling_stack(x, filters * 2, 2, normalize=False)
    x = layers.Flatten()(x)
    score = layers.Dense(1, dtype="float32", name="score")(x)
    return keras.Model(images, score, name="critic")


def build_paper_encoder(image_size: int, latent_dim: int) -> keras.Model:
    """The authors' MLP encoder: N² -> 512 -> 256 -> 128 (batch norm on the last two), leaky ReLU
    0.2, then the same latent heads as `build_encoder`."""
    images = _encoder_input(image_size, latent_dim)
    x = layers.Flatten()(images)
    for i, units in enumerate((512, 256, 128)):
        x = layers.Dense(units)(x)
        if i:
            x = layers.BatchNormalization()(x)
        x = layers.LeakyReLU(0.2)(x)
    return keras.Model(images, _latent_heads(x, latent_dim), name="encoder")


def _transposed_convolution(x, filters: int, kernel: int, padding: int):
    """PyTorch's ConvTranspose2d(kernel, stride 2, padding): its output is the 'valid' one less
    `padding` pixels at each border, (n - 1)·2 - 2·padding + kernel."""
    x = layers.Conv2DTranspose(filters, kernel, strides=2, padding="valid")(x)
    return layers.Cropping2D(padding)(x) if padding else x


def build_paper_decoder(image_size: int, latent_dim: int) -> keras.Model:
    """The authors' DCGAN decoder: a linear map to 4x4x64, then transposed convolutions to 7x7x32
    (5x5), 14x14x16 (6x6), each with batch norm and leaky ReLU, and to N x N x 1 with the kernel
    that makes the size come out (N - 22: 6 at 28, 18 at 40); linear output, as theirs for
    particles."""
    check_image_size(image_size, "paper")
    latent = keras.Input((latent_dim,), name="latent")
    x = layers.Dense(4 * 4 * 64)(latent)
    x = layers.Reshape((4, 4, 64))(x)
    for filters, kernel in ((32, 5), (16, 6)):
        x = _transposed_convolution(x, filters, kernel, padding=2)
        x = layers.BatchNormalization()(x)
        x = layers.LeakyReLU(0.2)(x)
    x = _subpixel_transposed_convolution(x, 1, image_size - 22, padding=2)
    images = layers.Lambda(lambda t: keras.ops.depth_to_space(t, 2), dtype="float32",
                           name="canonical_image")(x)
    return keras.Model(latent, images, name="decoder")


def _subpixel_transposed_convolution(x, filters: int, kernel: int, padding: int):
    """PyTorch's ConvTranspose2d(kernel, stride 2, padding) for even kernel and padding, as a
    stride-1 convolution to 4·filters channels (one per output pixel phase), to be followed by a
    depth-to-space: the same family of maps with the same number of weights, and on a CPU a
    faster path than a transposed convolution with a large kernel and one output channel
    (benchmarks/README.md, Throughput). Output phase r of pixel 2m + r draws on inputs
    m + padding/2 - kernel/2 + 1 ... m + padding/2."""
    half, size = kernel // 2, int(x.shape[1])
    positions = size - 1 - padding + half  # output size / 2
    left = half - 1 - padding // 2
    right = positions - 1 + padding // 2 - (size - 1)
    x = layers.ZeroPadding2D(((left, right), (left, right)))(x)
    return layers.Conv2D(4 * filters, half, padding="valid")(x)


def build_paper_critic(image_size: int) -> keras.Model:
    """The authors' critic: 5x5 stride-2 convolutions of 2, 4 and 8 channels, leaky ReLU 0.2, then
    a linear score. Their batch norm is left out (see `build_critic`)."""
    check_image_size(image_size)
    images = keras.Input((image_size, image_size, 1), name="images")
    x = images
    for filters in (2, 4, 8):
        x = layers.Conv2D(filters, 5, strides=2, padding="same")(x)
        x = layers.LeakyReLU(0.2)(x)
    x = layers.Flatten()(x)
    score = layers.Dense(1, dtype="float32", name="score")(x)
    return keras.Model(images, score, name="critic")


def build_networks(architecture: str, image_size: int, latent_dim: int, filters: int = 32,
                   critic_filters: int = 16) -> tuple[keras.Model, keras.Model, keras.Model]:
    """(encoder, decoder, critic) of `architecture`; the widths apply to `conv` only, `paper`
    has the authors' fixed sizes."""
    if architecture == "conv":
        return (build_encoder(image_size, latent_dim, filters),
                build_decoder(image_size, latent_dim, filters),
                build_critic(image_size, critic_filters))
    if architecture == "paper":
        return (build_paper_encoder(image_size, latent_dim),
                build_paper_decoder(image_size, latent_dim), build_paper_critic(image_size))
    raise ValueError(f"unknown architecture {architecture!r}; expected one of {ARCHITECTURES}")


def multiply_adds(model: keras.Model) -> int:
    """Multiply-adds of one image's forward pass through `model`'s dense and convolution layers
    (the rest, elementwise, is negligible beside them)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, (layers.Conv2D, layers.Dense)):
            kernel = layer.kernel.shape
            if isinstance(layer, layers.Conv2D):  # each output pixel: k·k·in_channels per filter
                total += _pixels(layer.output.shape) * kernel[0] * kernel[1] * kernel[2] * kernel[3]
            else:
                total += kernel[0] * kernel[1]
        elif isinstance(layer, layers.Conv2DTranspose):  # each input pixel scatters k·k·out
            kernel = layer.kernel.shape
            total += _pixels(layer.input.shape) * kernel[0] * kernel[1] * kernel[2] * kernel[3]
    return total


def _pixels(shape) -> int:
    return int(shape[1]) * int(shape[2])
