"""Backbones: registry, output shapes at 112 and 120, known sizes, gradients."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from npcface.training.backbones import BACKBONES, get_backbone, list_backbones  # noqa: E402
from npcface.training.errors import UnknownNameError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


NAMES = BACKBONES.names(aliases=False)  # every registered backbone


def test_registry():
    assert {"mobilefacenet", "iresnet18", "iresnet50", "iresnet100"} <= set(NAMES)
    assert set(NAMES) <= set(list_backbones())
    with pytest.raises(UnknownNameError, match="mobilefacenet"):
        get_backbone("resnet9000")


@pytest.mark.parametrize("size", [112, 120])
@pytest.mark.parametrize("name", NAMES)
def test_forward_shape(name, size):
    # full depth, narrow channels for the ResNets so the test stays fast on 2 cores
    kw = {} if name == "mobilefacenet" else {"width": 0.125}
    model = get_backbone(name, input_size=size, embedding_size=512, **kw).eval()
    assert model.input_size == size and model.embedding_size == 512
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 512) and torch.isfinite(out).all()
    # the head is built for that size: other sizes do not fit
    with pytest.raises(RuntimeError), torch.no_grad():
        model(torch.randn(2, 3, size + 16, size + 16))


def test_final_map_side_follows_input_size():
    # 4 stride-2 stages: 112 -> 7, 120 -> 8 (ceil); the global depthwise conv / FC match it
    mbf112, mbf120 = get_backbone("mobilefacenet", 112), get_backbone("mobilefacenet", 120)
    assert mbf112.gdc[0].kernel_size == (7, 7) and mbf120.gdc[0].kernel_size == (8, 8)
    r112 = get_backbone("iresnet18", 112, width=0.125)
    r120 = get_backbone("iresnet18", 120, width=0.125)
    assert r112.fc.in_features == 64 * 7 * 7 and r120.fc.in_features == 64 * 8 * 8


def test_known_sizes():
    n = sum(p.numel() for p in get_backbone("iresnet50", 112).parameters())
    assert n == pytest.approx(43.59e6, rel=2e-3)  # insightface R50: 43.6M (166 MiB fp32)
    mbf = sum(p.numel() for p in get_backbone("mobilefacenet", 112, 128).parameters())
    assert 0.9e6 < mbf < 1.1e6  # MobileFaceNet paper: 0.99M parameters (128-d)


def test_train_step_changes_embedding_and_custom_size():
    torch.manual_seed(0)
    model = get_backbone(
        "mobilefacenet", input_size=48, embedding_size=16, blocks=(1, 1, 1, 1), width=0.25
    )
    x = torch.randn(4, 3, 48, 48)
    out = model(x)
    assert out.shape == (4, 16)
    out.pow(2).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
