"""MobileFaceNet (Chen et al. 2018), the NPCFace paper's backbone for ablations.

Paper: Chen, Liu, Gao, Han, "MobileFaceNets: Efficient CNNs for Accurate Real-Time Face
Verification on Mobile Devices", https://arxiv.org/abs/1804.07573

Layout (paper Table 1, channels times ``width``): conv3x3/2 64 -> depthwise 3x3 64 ->
bottlenecks (t=2, c=64, n=1+4, s=2), (t=4, c=128, n=1, s=2), (t=2, c=128, n=6, s=1),
(t=4, c=128, n=1, s=2), (t=2, c=128, n=2, s=1) -> conv1x1 512 -> global depthwise conv
(kernel = final feature-map side: 7 at 112, 8 at 120) -> linear -> BatchNorm1d embedding.
PReLU activations, linear bottleneck outputs, residuals when shapes allow (as in the paper
and insightface's ``arcface_torch`` port). The embedding is 512-d as in the NPCFace paper
(the MobileFaceNet paper uses 128).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from . import _spatial_after, register_backbone

__all__ = ["MobileFaceNet", "mobilefacenet"]


def _conv_bn(cin: int, cout: int, k: int, s: int, p: int, groups: int = 1, act: bool = True):
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.PReLU(cout))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand (PReLU) -> 3x3 depthwise (PReLU) -> 1x1 linear."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.layers = nn.Sequential(
            _conv_bn(cin, hidden, 1, 1, 0),
            _conv_bn(hidden, hidden, 3, stride, 1, groups=hidden),
            _conv_bn(hidden, cout, 1, 1, 0, act=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class MobileFaceNet(nn.Module):
    """MobileFaceNet with a 512-d (configurable) embedding.

    Args:
        input_size: side of the square input (120 or 112; any size >= 32 works).
        embedding_size: embedding length (NPCFace paper: 512).
        blocks: residual repeats after the first block of each of the four stages
            (paper: 1 depthwise, 4, 6, 2).
        width: channel multiplier (1.0 = the paper's 64/128 channels).
        last_channels: channels of the 1x1 conv before the global depthwise conv (paper: 512).
    """

    def __init__(
        self,
        input_size: int = 120,
        embedding_size: int = 512,
        blocks: Sequence[int] = (1, 4, 6, 2),
        width: float = 1.0,
        last_channels: int = 512,
    ) -> None:
        super().__init__()
        if input_size < 32:
            raise ValueError(f"MobileFaceNet needs inputs of at least 32 px, not {input_size}")
        self.input_size, self.embedding_size = input_size, embedding_size
        c64, c128 = max(8, round(64 * width)), max(8, round(128 * width))
        layers: list[nn.Module] = [_conv_bn(3, c64, 3, 2, 1)]
        layers += [_conv_bn(c64, c64, 3, 1, 1, groups=c64) for _ in range(blocks[0])]
        stages = [  # (cin, cout, expansion of the strided block, repeats, repeat expansion)
            (c64, c64, 2, blocks[1], 2),
            (c64, c128, 4, blocks[2], 2),
            (c128, c128, 4, blocks[3], 2),
        ]
        for cin, cout, t_first, repeats, t_rep in stages:
            layers.append(Bottleneck(cin, cout, 2, t_first))
            layers += [Bottleneck(cout, cout, 1, t_rep) for _ in range(repeats)]
        layers.append(_conv_bn(c128, last_channels, 1, 1, 0))
        self.body = nn.Sequential(*layers)
        side = _spatial_after(input_size, 4)
        self.gdc = _conv_bn(
            last_channels, last_channels, side, 1, 0, groups=last_channels, act=False
        )
        self.linear = nn.Linear(last_channels, embedding_size, bias=False)
        self.features = nn.BatchNorm1d(embedding_size)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.gdc(self.body(x))
        return self.features(self.linear(x.flatten(1)))


@register_backbone("mobilefacenet", "mbf")
def mobilefacenet(input_size: int = 120, embedding_size: int = 512, **kwargs) -> MobileFaceNet:
    """MobileFaceNet as in the paper (about 1M parameters + the embedding layer)."""
    return MobileFaceNet(input_size, embedding_size, **kwargs)
