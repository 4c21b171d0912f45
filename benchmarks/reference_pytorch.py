"""The authors' PyTorch training step and inference, written afresh from their published
architecture and step, for `benchmarks/throughput.py` to time beside ours in the same run.

Facts taken from kobybibas/CryoEM_rotation_invariant (`src/gan_utils.py`,
`src/ours_lightning_utils.py`, `configs/ours_5hdb.yaml`), their `cnn` architecture:
- encoder: MLP N² -> 512 -> 256 -> 128 -> latent (batch norm on the 256 and 128 layers, leaky ReLU
  0.2); the last latent unit is the angle.
- decoder (DCGAN): linear latent -> 4x4x64, transposed convolutions 64->32 (5x5, stride 2,
  padding 2) and 32->16 (6x6, 2, 2), each with batch norm and leaky ReLU, then 16->1 with kernel
  N - 22; linear output for particles.
- critic and angle classifier: two networks of the same shape, 5x5 stride-2 convolutions of
  2, 4, 8 channels (batch norm on the last two), a linear score.
- optimizers: Adam lr 1e-4, betas (0.5, 0.999), weight decay 1e-5; generator over encoder and
  decoder, critic over critic and angle classifier.
- the Lightning 0.7 step: for each optimizer, a closure runs the forward pass and its loss
  backward; the generator steps on every batch, the critic on every 4th (`discriminator_idle_freq`
  4), and its gradients are zeroed only when it steps. WGAN losses ±mean(score) and the angle loss
  exp(MSE) - 1. Their weight clipper computes a clamped copy it never stores, so it is left out.

Data loading (their rotation runs in the data loader) is not timed: the step runs on one in-memory
batch of (observed, angle, canonical), as ours does.
"""
import torch
from torch import nn
from torch.nn import functional as F

CRITIC_EVERY = 4


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class Encoder(nn.Module):
    """Image [B, 1, N, N] -> (content [B, latent - 1], angle [B, 1])."""

    def __init__(self, image_size: int, latent_dim: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(image_size * image_size, 512), nn.LeakyReLU(0.2),
            nn.Linear(512, 256), nn.BatchNorm1d(256), nn.LeakyReLU(0.2),
            nn.Linear(256, 128), nn.BatchNorm1d(128), nn.LeakyReLU(0.2),
            nn.Linear(128, latent_dim))

    def forward(self, images: torch.Tensor):
        latent = self.layers(images.flatten(1))
        return latent[:, :-1], latent[:, -1:]


class Decoder(nn.Module):
    """(content, angle) -> image [B, 1, N, N]."""

    def __init__(self, image_size: int, latent_dim: int):
        super().__init__()
        self.project = nn.Linear(latent_dim, 4 * 4 * 64)
        self.up1 = nn.ConvTranspose2d(64, 32, 5, stride=2, padding=2)
        self.norm1 = nn.BatchNorm2d(32)
        self.up2 = nn.ConvTranspose2d(32, 16, 6, stride=2, padding=2)
        self.norm2 = nn.BatchNorm2d(16)
        self.up3 = nn.ConvTranspose2d(16, 1, image_size - 22, stride=2, padding=2)

    def forward(self, content: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
        x = self.project(torch.cat([content, angle], 1)).view(-1, 64, 4, 4)
        x = _leaky(self.norm1(self.up1(x)))
        x = _leaky(self.norm2(self.up2(x)))
        return self.up3(x)


class Critic(nn.Module):
    """Image -> unbounded score [B, 1] (the critic, and the angle classifier)."""

    def __init__(self, image_size: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 5, stride=2, padding=2)
        self.conv2 = nn.Conv2d(2, 4, 5, stride=2, padding=2)
        self.norm2 = nn.BatchNorm2d(4)
        self.conv3 = nn.Conv2d(4, 8, 5, stride=2, padding=2)
        self.norm3 = nn.BatchNorm2d(8)
        side = image_size
        for _ in range(3):
            side = (side + 1) // 2
        self.score = nn.Linear(8 * side * side, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = _leaky(self.conv1(images))
        x = _leaky(self.norm2(self.conv2(x)))
        x = _leaky(self.norm3(self.conv3(x)))
        return self.score(x.flatten(1))


def _angle_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.exp(F.mse_loss(predicted, target)) - 1


class ReferenceModel:
    """The four networks, their two Adam optimizers and the two-closure training step."""

    def __init__(self, image_size: int, latent_dim: int = 32, seed: int = 0):
        torch.manual_seed(seed)
        self.encoder = Encoder(image_size, latent_dim)
        self.decoder = Decoder(image_size, latent_dim)
        self.critic = Critic(image_size)
        self.angle_classifier = Critic(image_size)
        adam = {"lr": 1e-4, "betas": (0.5, 0.999), "weight_decay": 1e-5}
        self.generator_optimizer = torch.optim.Adam(
            [*self.encoder.parameters(), *self.decoder.parameters()], **adam)
        self.critic_optimizer = torch.optim.Adam(
            [*self.critic.parameters(), *self.angle_classifier.parameters()], **adam)
        self.networks = (self.encoder, self.decoder, self.critic, self.angle_classifier)

    def _forward(self, observed: torch.Tensor):
        content, angle = self.encoder(observed)
        return self.decoder(content, torch.zeros_like(angle)), angle[:, 0]

    def train_step(self, batch_index: int, observed: torch.Tensor, angles: torch.Tensor,
                   canonical: torch.Tensor) -> torch.Tensor:
        """One batch: the generator closure and step, then the critic closure (and its step on
        every 4th batch). Returns the generator loss."""
        for network in self.networks:
            network.train()
        fake, predicted = self._forward(observed)
        generator_loss = 0.25 * (
            F.l1_loss(fake, canonical) + F.mse_loss(fake, canonical)
            + _angle_loss(predicted, angles)
            + _angle_loss(self.angle_classifier(fake)[:, 0], torch.zeros_like(angles))
            - self.critic(fake).mean())
        generator_loss.backward()
        self.generator_optimizer.step()
        self.generator_optimizer.zero_grad()
        fake, _ = self._forward(observed)
        critic_loss = 0.5 * (0.5 * (self.critic(fake).mean() - self.critic(canonical).mean())
                             + _angle_loss(self.angle_classifier(observed)[:, 0], angles))
        critic_loss.backward()
        if batch_index % CRITIC_EVERY == 0:
            self.critic_optimizer.step()
            self.critic_optimizer.zero_grad()
        return generator_loss.detach()

    @torch.inference_mode()
    def canonicalize(self, observed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference: (canonical images, angles) of a batch, networks in eval mode."""
        for network in self.networks:
            network.eval()
        return self._forward(observed)


def multiply_adds(module: nn.Module, image_size: int, latent_dim: int = 32) -> int:
    """Multiply-adds of one image's forward pass through `module`'s linear and convolution layers,
    counted from the shapes a forward pass of one input sees."""
    total = 0

    def count(layer, inputs, output):
        nonlocal total
        if isinstance(layer, nn.Linear):
            total += layer.in_features * layer.out_features
        elif isinstance(layer, nn.Conv2d):
            total += output.shape[2] * output.shape[3] * layer.weight.numel()
        elif isinstance(layer, nn.ConvTranspose2d):
            total += inputs[0].shape[2] * inputs[0].shape[3] * layer.weight.numel()

    hooks = [m.register_forward_hook(count) for m in module.modules()
             if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    module.eval()
    with torch.inference_mode():
        if isinstance(module, Decoder):
            module(torch.zeros(1, latent_dim - 1), torch.zeros(1, 1))
        else:
            module(torch.zeros(1, 1, image_size, image_size))
    for hook in hooks:
        hook.remove()
    return total
