"""Network pieces for BC and BC-RNN: MLP, GMM head, recurrent core, camera encoder.

The camera encoder is a ResNet-18-style trunk (written here; torchvision is not needed)
followed by a spatial-softmax keypoint layer and a linear projection, with random crops at
training time and centre crops at evaluation, the arrangement robomimic 0.3.0 uses by
default for image observations. Behaviour follows robomimic's models; the code is our own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributions as D
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """Linear layers of sizes `layer_dims`, each followed by ReLU.

    This is the trunk between the observation encoder (or RNN) and the action head;
    with no layers it passes features through unchanged.
    """

    def __init__(self, input_dim: int, layer_dims: Sequence[int] = ()):
        super().__init__()
        layers: list[nn.Module] = []
        dim = input_dim
        for width in layer_dims:
            layers += [nn.Linear(dim, width), nn.ReLU()]
            dim = width
        self.net = nn.Sequential(*layers)
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection (ResNet-18 block)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip)


class ResNet18Conv(nn.Module):
    """The convolutional trunk of ResNet-18 (no pooling or classifier): C x H x W -> 512 x H/32 x W/32."""

    def __init__(self, input_channel: int = 3):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(input_channel, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages = []
        in_ch = 64
        for out_ch, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages += [_BasicBlock(in_ch, out_ch, stride), _BasicBlock(out_ch, out_ch, 1)]
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def output_shape(input_shape: Sequence[int]) -> list[int]:
        _, h, w = input_shape
        return [512, int(math.ceil(h / 32.0)), int(math.ceil(w / 32.0))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class SpatialSoftmax(nn.Module):
    """Keypoints from feature maps: a softmax over pixels per channel, then the expected
    (x, y) position in [-1, 1] (Finn et al., deep spatial autoencoders).

    A 1x1 convolution first maps the C input channels to `num_kp` keypoint channels.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_kp: int | None = 32,
        temperature: float = 1.0,
        learnable_temperature: bool = False,
        noise_std: float = 0.0,
    ):
        super().__init__()
        c, h, w = input_shape
        self.h, self.w = h, w
        self.kp_conv = nn.Conv2d(c, num_kp, 1) if num_kp is not None else None
        self.num_kp = num_kp if num_kp is not None else c
        self.noise_std = noise_std
        temp = torch.full((1,), float(temperature))
        if learnable_temperature:
            self.temperature = nn.Parameter(temp)
        else:
            self.register_buffer("temperature", temp)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        self.register_buffer("pos_x", xs.reshape(1, h * w))
        self.register_buffer("pos_y", ys.reshape(1, h * w))

    def output_shape(self, input_shape: Sequence[int] | None = None) -> list[int]:
        return [self.num_kp, 2]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.kp_conv is not None:
            features = self.kp_conv(features)
        flat = features.reshape(-1, self.h * self.w)
        attention = F.softmax(flat / self.temperature, dim=-1)
        x = (self.pos_x * attention).sum(dim=1, keepdim=True)
        y = (self.pos_y * attention).sum(dim=1, keepdim=True)
        keypoints = torch.cat([x, y], dim=1).view(-1, self.num_kp, 2)
        if self.training and self.noise_std > 0:
            keypoints = keypoints + torch.randn_like(keypoints) * self.noise_std
        return keypoints


class SpatialMeanPool(nn.Module):
    """Average over the spatial dimensions: C x H x W -> C."""

    def __init__(self, input_shape: Sequence[int]):
        super().__init__()
        self.channels = input_shape[0]

    def output_shape(self, input_shape: Sequence[int] | None = None) -> list[int]:
        return [self.channels]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.mean(dim=(2, 3))


class CropRandomizer(nn.Module):
    """Random crops of crop_height x crop_width while training, centre crops otherwise.

    With `num_crops` > 1 each image yields several crops whose features are averaged.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        crop_height: int = 76,
        crop_width: int = 76,
        num_crops: int = 1,
    ):
        super().__init__()
        _, h, w = input_shape
        if not (0 < crop_height <= h and 0 < crop_width <= w):
            raise ValueError(f"crop {crop_height}x{crop_width} does not fit images of {h}x{w}")
        self.h, self.w = h, w
        self.ch, self.cw = crop_height, crop_width
        self.num_crops = num_crops

    def output_shape(self, input_shape: Sequence[int]) -> list[int]:
        return [input_shape[0], self.ch, self.cw]

    def crop(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B * num_crops, C, ch, cw]."""
        if not self.training:
            top, left = (self.h - self.ch) // 2, (self.w - self.cw) // 2
            return images[:, :, top : top + self.ch, left : left + self.cw]
        b = images.shape[0]
        n = self.num_crops
        device = images.device
        tops = torch.randint(0, self.h - self.ch + 1, (b, n), device=device)
        lefts = torch.randint(0, self.w - self.cw + 1, (b, n), device=device)
        rows = (tops.unsqueeze(-1) + torch.arange(self.ch, device=device)).reshape(b * n, self.ch)
        cols = (lefts.unsqueeze(-1) + torch.arange(self.cw, device=device)).reshape(b * n, self.cw)
        src = images.repeat_interleave(n, dim=0)  # [B*n, C, H, W]
        idx = torch.arange(b * n, device=device)
        # [B*n, ch, cw, C] from advanced indexing, then channels first again
        out = src.permute(0, 2, 3, 1)[idx[:, None, None], rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2).contiguous()

    def merge(self, features: torch.Tensor) -> torch.Tensor:
        """[B * num_crops, D] -> [B, D] by averaging the crops of each image."""
        if not self.training or self.num_crops == 1:
            return features
        return features.view(-1, self.num_crops, *features.shape[1:]).mean(dim=1)


class VisualCore(nn.Module):
    """Image [C, H, W] -> feature vector: optional crop, ResNet-18 trunk, pooling, linear."""

    def __init__(
        self,
        input_shape: Sequence[int],
        feature_dimension: int | None = 64,
        pool_class: str | None = "SpatialSoftmax",
        pool_kwargs: dict | None = None,
        crop: dict | None = None,
    ):
        super().__init__()
        shape = list(input_shape)
        self.randomizer = CropRandomizer(shape, **crop) if crop else None
        if self.randomizer is not None:
            shape = self.randomizer.output_shape(shape)
        self.backbone = ResNet18Conv(input_channel=shape[0])
        feat = self.backbone.output_shape(shape)
        pool_kwargs = dict(pool_kwargs or {})
        if pool_class == "SpatialSoftmax":
            self.pool: nn.Module | None = SpatialSoftmax(feat, **pool_kwargs)
        elif pool_class == "SpatialMeanPool":
            self.pool = SpatialMeanPool(feat)
        else:
            self.pool = None
        if self.pool is not None:
            feat = self.pool.output_shape(feat)
        flat = int(math.prod(feat))
        self.linear = nn.Linear(flat, feature_dimension) if feature_dimension else None
        self.out_dim = feature_dimension or flat

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.randomizer.crop(images) if self.randomizer is not None else images
        x = self.backbone(x)
        if self.pool is not None:
            x = self.pool(x)
        x = x.flatten(start_dim=1)
        if self.linear is not None:
            x = self.linear(x)
        if self.randomizer is not None:
            x = self.randomizer.merge(x)
        return x


def image_to_float_chw(x: torch.Tensor, modality: str) -> torch.Tensor:
    """[..., H, W, C] camera frames -> float [..., C, H, W]; rgb uint8 scaled to [0, 1]."""
    x = x.movedim(-1, -3)
    if modality == "rgb":
        return x.float() / 255.0
    return x.float()


class ObservationEncoder(nn.Module):
    """A dict of observations -> one flat feature vector.

    Low-dim keys are flattened and passed through; camera keys (rgb/depth, stored
    [H, W, C]) go through their own VisualCore. Keys are encoded in sorted order.
    `obs_shapes` maps each key to its per-step shape as stored in the dataset.
    """

    def __init__(
        self, obs_shapes: dict[str, Sequence[int]], modalities: dict[str, str], encoder_config: dict
    ):
        super().__init__()
        self.keys = sorted(obs_shapes)
        self.modalities = {k: modalities[k] for k in self.keys}
        self.cores = nn.ModuleDict()
        dim = 0
        for key in self.keys:
            shape = list(obs_shapes[key])
            modality = self.modalities[key]
            if modality in ("rgb", "depth"):
                if len(shape) != 3:
                    raise ValueError(
                        f"observation {key!r} ({modality}) must be H x W x C, found {shape}"
                    )
                enc = encoder_config[modality]
                core = enc["core_kwargs"]
                crop = None
                if enc.get("obs_randomizer_class") == "CropRandomizer":
                    rk = enc["obs_randomizer_kwargs"]
                    crop = {
                        "crop_height": rk["crop_height"],
                        "crop_width": rk["crop_width"],
                        "num_crops": rk.get("num_crops", 1),
                    }
                pool_kwargs = {
                    k: v
                    for k, v in core.get("pool_kwargs", {}).items()
                    if k in ("num_kp", "temperature", "learnable_temperature", "noise_std")
                }
                self.cores[key] = VisualCore(
                    [shape[2], shape[0], shape[1]],
                    feature_dimension=core.get("feature_dimension", 64),
                    pool_class=core.get("pool_class", "SpatialSoftmax"),
                    pool_kwargs=pool_kwargs if core.get("pool_class") == "SpatialSoftmax" else None,
                    crop=crop,
                )
                dim += self.cores[key].out_dim
            else:
                dim += int(math.prod(shape)) if shape else 1
        self.out_dim = dim

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """obs[key]: [B, *shape] -> [B, out_dim]."""
        feats = []
        for key in self.keys:
            x = obs[key]
            if key in self.cores:
                x = self.cores[key](image_to_float_chw(x, self.modalities[key]))
            feats.append(x.reshape(x.shape[0], -1).float())
        return torch.cat(feats, dim=-1)


class GMMHead(nn.Module):
    """Features -> a mixture of `num_modes` diagonal Gaussians over actions.

    Means are squashed with tanh to [-1, 1]. With `low_noise_eval` the component scales
    are tiny at evaluation time, so a sample is (almost) the mean of one sampled mode.
    """

    def __init__(
        self,
        input_dim: int,
        ac_dim: int,
        num_modes: int = 5,
        min_std: float = 1e-4,
        std_activation: str = "softplus",
        low_noise_eval: bool = True,
    ):
        super().__init__()
        self.ac_dim, self.num_modes = ac_dim, num_modes
        self.min_std, self.low_noise_eval = min_std, low_noise_eval
        self.std_activation = std_activation
        self.mean = nn.Linear(input_dim, num_modes * ac_dim)
        self.scale = nn.Linear(input_dim, num_modes * ac_dim)
        self.logits = nn.Linear(input_dim, num_modes)

    def forward(self, features: torch.Tensor) -> D.Distribution:
        lead = features.shape[:-1]
        means = torch.tanh(self.mean(features)).view(*lead, self.num_modes, self.ac_dim)
        raw_scale = self.scale(features).view(*lead, self.num_modes, self.ac_dim)
        if self.low_noise_eval and not self.training:
            scales = torch.full_like(means, 1e-4)
        elif self.std_activation == "exp":
            scales = torch.exp(raw_scale) + self.min_std
        else:
            scales = F.softplus(raw_scale) + self.min_std
        components = D.Independent(D.Normal(means, scales), 1)
        mixture = D.Categorical(logits=self.logits(features))
        return D.MixtureSameFamily(mixture, components)


class DeterministicHead(nn.Module):
    """Features -> actions in [-1, 1] (tanh)."""

    def __init__(self, input_dim: int, ac_dim: int):
        super().__init__()
        self.linear = nn.Linear(input_dim, ac_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(features))


class RNNCore(nn.Module):
    """An LSTM (or GRU) over [B, T, D] feature sequences, batch first."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        num_layers: int,
        rnn_type: str = "LSTM",
        bidirectional: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        cls = nn.LSTM if rnn_type == "LSTM" else nn.GRU
        self.rnn_type = rnn_type
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.directions = 2 if bidirectional else 1
        self.rnn = cls(
            input_dim,
            hidden_dim,
            num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.out_dim = hidden_dim * self.directions

    def init_state(self, batch_size: int, device: torch.device):
        h = torch.zeros(
            self.num_layers * self.directions, batch_size, self.hidden_dim, device=device
        )
        if self.rnn_type == "LSTM":
            return (h, torch.zeros_like(h))
        return h

    def forward(self, x: torch.Tensor, state=None):
        if state is None:
            state = self.init_state(x.shape[0], x.device)
        return self.rnn(x, state)
