"""IResNet-18/34/50/100: the "improved" pre-activation ResNets of ArcFace / insightface.

Paper: Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition",
https://arxiv.org/abs/1801.07698 (the IR blocks; insightface ``arcface_torch`` layout).

BN-conv-BN-PReLU-conv(stride)-BN residual blocks, a stride-1 3x3 stem, four stages with
stride 2, then BN -> dropout -> fully connected from the flattened final map (7x7 at 112,
8x8 at 120) -> BatchNorm1d (scale fixed to 1) = embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from . import _spatial_after, register_backbone

__all__ = ["IResNet", "iresnet18", "iresnet34", "iresnet50", "iresnet100"]

_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}


class IBasicBlock(nn.Module):
    """IR block: BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin, eps=1e-5),
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout, eps=1e-5),
            nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout, eps=1e-5),
        )
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.body(x) + identity


class IResNet(nn.Module):
    """IResNet backbone.

    Args:
        layers: blocks per stage, e.g. (3, 4, 14, 3) for IResNet-50.
        input_size: side of the square input (120 or 112).
        embedding_size: embedding length (512).
        dropout: dropout before the FC (arcface_torch: 0).
        width: channel multiplier of the (64, 128, 256, 512) stages (1.0 = standard).
        zero_init_residual: start each residual branch's last BN at 0.
    """

    def __init__(
        self,
        layers: Sequence[int],
        input_size: int = 120,
        embedding_size: int = 512,
        dropout: float = 0.0,
        width: float = 1.0,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if input_size < 32:
            raise ValueError(f"IResNet needs inputs of at least 32 px, not {input_size}")
        self.input_size, self.embedding_size = input_size, embedding_size
        chans = [max(8, round(c * width)) for c in (64, 128, 256, 512)]
        self.stem = nn.Sequential(
            nn.Conv2d(3, chans[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(chans[0], eps=1e-5),
            nn.PReLU(chans[0]),
        )
        stages, cin = [], chans[0]
        for n, cout in zip(layers, chans, strict=True):
            blocks = [IBasicBlock(cin, cout, 2)] + [
                IBasicBlock(cout, cout, 1) for _ in range(n - 1)
            ]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(cin, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout)
        side = _spatial_after(input_size, 4)
        self.fc = nn.Linear(cin * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad_(False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.1)  # arcface_torch's choice
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, IBasicBlock):
                    nn.init.zeros_(m.body[-1].weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.stages(self.stem(x)))
        return self.features(self.fc(self.dropout(x.flatten(1))))


def _factory(depth: int):
    def build(input_size: int = 120, embedding_size: int = 512, **kwargs) -> IResNet:
        return IResNet(_LAYERS[depth], input_size, embedding_size, **kwargs)

    build.__name__ = f"iresnet{depth}"
    build.__doc__ = f"IResNet-{depth}: blocks per stage {_LAYERS[depth]}."
    return build


iresnet18 = register_backbone("iresnet18", "r18")(_factory(18))
iresnet34 = register_backbone("iresnet34", "r34")(_factory(34))
iresnet50 = register_backbone("iresnet50", "r50")(_factory(50))
iresnet100 = register_backbone("iresnet100", "r100")(_factory(100))
