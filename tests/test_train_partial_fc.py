"""Partial FC: equals the full FC at sample rate 1, samples correctly, and a 2-process gloo run
matches one process on the same global batch (loss, backbone and centre gradients)."""

from __future__ import annotations

import os
import sys

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from npcface.training.heads import get_head  # noqa: E402
from npcface.training.partial_fc import PartialFC, _init_rows, shard_range  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


HEADS = {
    "arcface": {"s": 32.0, "m": 0.4},
    "npcface": {},
    "cosface": {},
    "mv_softmax": {},
    "curricularface": {},
    "adacos": {},
    "sphereface": {},
}
D, C, N = 16, 11, 8


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 8, generator=g)
    labels = torch.tensor([0, 3, 5, 5, 6, 10, 2, 9])  # classes on both halves of 11
    return x, labels


def _backbone(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, D))


@pytest.mark.parametrize("name", list(HEADS))
def test_sample_rate_one_equals_full_fc(name):
    x, labels = _batch()
    emb = torch.randn(N, D, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    pfc = PartialFC(get_head(name, **HEADS[name]), D, C, sample_rate=1.0, seed=3)
    w = pfc.weight.detach().clone().requires_grad_(True)
    ref_head = get_head(name, **HEADS[name])
    cos = F.linear(F.normalize(emb, dim=1), F.normalize(w, dim=1))
    ref = F.cross_entropy(ref_head(cos, labels), labels)
    ref.backward()
    ref_emb_grad, emb.grad = emb.grad.clone(), None
    loss = pfc(emb, labels)
    loss.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(emb.grad, ref_emb_grad)
    torch.testing.assert_close(pfc.weight.grad, w.grad)


def test_sampling_keeps_positives_and_matches_restricted_softmax():
    num_classes, rate = 200, 0.1
    head = get_head("npcface")
    pfc = PartialFC(head, D, num_classes, sample_rate=rate, seed=5)
    emb = torch.randn(N, D, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 7, 7, 50, 51, 120, 199, 3])
    loss = pfc(emb, labels)
    index = pfc.last_index
    assert index.numel() == int(rate * num_classes)
    assert set(labels.tolist()) <= set(index.tolist())
    assert torch.equal(index, index.sort().values)
    # reference: the full cosine restricted to the sampled columns, labels remapped
    cos = F.linear(F.normalize(emb, dim=1), F.normalize(pfc.weight.detach(), dim=1))[:, index]
    remap = torch.tensor([index.tolist().index(y) for y in labels.tolist()])
    ref = F.cross_entropy(get_head("npcface")(cos, remap), remap)
    torch.testing.assert_close(loss, ref)
    # only sampled rows get a gradient
    loss.backward()
    touched = set(torch.nonzero(pfc.weight.grad.abs().sum(1)).squeeze(1).tolist())
    assert touched <= set(index.tolist()) and len(touched) > 0
    # two steps sample different negatives, and the sampler state restores exactly
    state = pfc.state_dict()
    pfc(emb, labels)
    first = pfc.last_index.clone()
    assert not torch.equal(first, index)
    other = PartialFC(get_head("npcface"), D, num_classes, sample_rate=rate, seed=99)
    other.load_state_dict(state)
    other(emb, labels)
    assert torch.equal(other.last_index, first)


def test_init_independent_of_sharding():
    full = _init_rows(0, 10_000, 4, 0.01, seed=7)
    parts = [_init_rows(*shard_range(10_000, r, 3), 4, 0.01, seed=7) for r in range(3)]
    assert [shard_range(10_000, r, 3) for r in range(3)] == [(0, 3334), (3334, 3333), (6667, 3333)]
    torch.testing.assert_close(torch.cat(parts), full, rtol=0, atol=0)
    assert full.std().item() == pytest.approx(0.01, rel=0.05)
    unit = PartialFC(get_head("arcface"), 4, 10_000, init_std=0.01, init_row_norm=1.0, seed=7)
    torch.testing.assert_close(unit.weight.norm(dim=1), torch.ones(10_000))
    torch.testing.assert_close(unit.weight.detach(), F.normalize(full, dim=1))


# ----------------------------------------------------------------------------- 2 processes


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, labels = _batch()
        b = N // world
        results = {}
        for name, kw in HEADS.items():
            net = DDP(_backbone())
            pfc = PartialFC(get_head(name, **kw), D, C, sample_rate=1.0, seed=3)
            loss = pfc(net(x[rank * b : (rank + 1) * b]), labels[rank * b : (rank + 1) * b])
            loss.backward()
            results[name] = {
                "loss": loss.detach(),
                "backbone": [p.grad.clone() for p in net.parameters()],
                "weight_grad": pfc.weight.grad.clone(),
                "buffers": {k: v.clone() for k, v in pfc.margin_loss.state_dict().items()},
                "start": pfc.class_start,
            }
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(sys.platform == "win32", reason="gloo file store on POSIX")
def test_two_process_gloo_matches_single_process(tmp_path):
    import torch.multiprocessing as mp

    world = 2
    mp.spawn(_worker, args=(world, str(tmp_path / "store"), str(tmp_path)), nprocs=world)
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    x, labels = _batch()
    for name, kw in HEADS.items():
        net = _backbone()
        pfc = PartialFC(get_head(name, **kw), D, C, sample_rate=1.0, seed=3)
        loss = pfc(net(x), labels)
        loss.backward()
        for r in range(world):
            res = got[r][name]
            torch.testing.assert_close(res["loss"], loss.detach(), msg=f"{name} loss")
            for g, p in zip(res["backbone"], net.parameters(), strict=True):
                torch.testing.assert_close(g, p.grad, msg=f"{name} backbone grad")
            start, count = shard_range(C, r, world)
            assert res["start"] == start
            torch.testing.assert_close(
                res["weight_grad"], pfc.weight.grad[start : start + count], msg=f"{name} W grad"
            )
            for k, v in pfc.margin_loss.state_dict().items():  # CurricularFace t, AdaCos s
                torch.testing.assert_close(res["buffers"][k], v, msg=f"{name} {k}")
