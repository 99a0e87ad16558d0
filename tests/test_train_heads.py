"""Margin heads against independent per-element computations from the papers' formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from npcface.training import heads as H  # noqa: E402
from npcface.training.errors import UnknownNameError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- references
# Plain-python, float64, one element at a time, written from docs/npcface.md and the papers.


def ref_margined(cy: float, m: float, kind: str = "arc") -> float:
    """cos(theta + m), ArcFace fallback cos - m sin m once theta + m passes pi; or cy - m."""
    if kind == "cos":
        return cy - m
    theta = math.acos(max(-1.0, min(1.0, cy)))
    if theta + m < math.pi:
        return math.cos(theta + m)
    return cy - m * math.sin(m)


def ref_npcface(cos, labels, s=32.0, m0=0.4, m1=0.2, t=1.1, alpha=0.25, kind="arc"):
    """Returns (logits, hard sets, m_i) row by row."""
    out, hards, margins = [], [], []
    for i, y in enumerate(labels):
        row = [max(-1.0, min(1.0, float(c))) for c in cos[i]]
        cy = row[y]
        thr = ref_margined(cy, m0, kind)
        hard = {j for j, c in enumerate(row) if j != y and c > thr}
        m_i = m0 + m1 * sum(row[j] for j in hard) / len(hard) if hard else m0
        f = [s * (t * c + alpha) if j in hard else s * c for j, c in enumerate(row)]
        f[y] = s * ref_margined(cy, m_i, kind)
        out.append(f)
        hards.append(hard)
        margins.append(m_i)
    return np.array(out), hards, np.array(margins)


def ref_softmax(row):
    z = np.asarray(row, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def random_cos(n, c, seed=0, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(n, c, generator=g) * 2 - 1) * spread).float()


def edge_cos():
    """Rows at cos = +-1, theta + m around pi, all-hard and no-hard rows, first/last label."""
    c = torch.tensor(
        [
            [1.0, -1.0, 0.3, 0.99, -0.2, 0.0],  # positive at +1, negative near 1: hard
            [-1.0, 0.5, 0.1, -0.99, 0.2, 1.0],  # positive at -1 (fallback), everything hard
            [0.2, 0.9, -0.95, 0.0, 0.1, 0.05],  # positive cos -0.95: theta + 0.4 > pi
            [0.95, -0.5, -0.5, -0.5, -0.5, 0.9],  # label 5 (last column), one hard negative
            [0.9, -0.8, -0.7, -0.6, -0.5, -0.4],  # no hard negative -> m_i = m0
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # all zero: theta = pi/2, no hard
        ]
    )
    labels = torch.tensor([0, 0, 2, 5, 0, 3])
    return c, labels


# ----------------------------------------------------------------------------- NPCFace


@pytest.mark.parametrize("kind", ["arc", "cos"])
@pytest.mark.parametrize("case", ["random", "wide", "edge"])
def test_npcface_logits_match_formulas(kind, case):
    if case == "edge":
        cos, labels = edge_cos()
    else:
        n, c = 16, 37
        cos = random_cos(n, c, seed=1, spread=1.0 if case == "wide" else 0.4)
        labels = torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(2))
        # make some positives strong so there are rows with and without hard negatives
        cos[torch.arange(n // 2), labels[: n // 2]] = 0.95
    kw = dict(s=32.0, m0=0.4, m1=0.2, t=1.1, alpha=0.25)
    got = H.npcface_logits(cos, labels, **kw, positive=kind)
    want, hards, margins = ref_npcface(cos.double().tolist(), labels.tolist(), **kw, kind=kind)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-5, atol=2e-4)
    hard, m_i = H.npcface_mask_and_margin(cos, labels, 0.4, 0.2, positive=kind)
    assert [set(np.flatnonzero(r).tolist()) for r in hard.numpy()] == hards
    np.testing.assert_allclose(m_i.numpy(), margins, atol=1e-6)
    if case == "edge":  # the edge rows exercise each branch
        assert hards[1] == {1, 2, 3, 4, 5} and hards[4] == set() and hards[3] == {0}


def test_npcface_signature_and_defaults():
    import inspect

    sig = inspect.signature(H.npcface_logits)
    params = list(sig.parameters.values())
    assert [p.name for p in params[:7]] == ["cosine", "labels", "s", "m0", "m1", "t", "alpha"]
    assert [p.default for p in params[2:7]] == [32.0, 0.4, 0.2, 1.1, 0.25]
    assert all(p.kind is p.KEYWORD_ONLY for p in params[7:])


def test_npcface_reduces_to_arcface():
    cos, labels = random_cos(32, 50, seed=3, spread=0.6), torch.arange(32) % 50
    npc = H.npcface_logits(cos, labels, s=32.0, m0=0.4, m1=0.0, t=1.0, alpha=0.0)
    arc = H.ArcFace(s=32.0, m=0.4)(cos, labels)
    torch.testing.assert_close(npc, arc, rtol=0, atol=1e-5)
    # and the loss equals the textbook ArcFace loss, written out element by element
    want = []
    for i, y in enumerate(labels.tolist()):
        row = [32.0 * c for c in cos[i].double().tolist()]
        row[y] = 32.0 * ref_margined(float(cos[i, y]), 0.4)
        want.append(-math.log(ref_softmax(row)[y]))
    assert F.cross_entropy(npc, labels).item() == pytest.approx(np.mean(want), rel=1e-5)


def test_npcface_negative_side_equals_mv_softmax():
    cos, labels = random_cos(32, 50, seed=4, spread=0.7), torch.arange(32) % 50
    t = 1.12
    npc = H.npcface_logits(cos, labels, s=32.0, m0=0.35, m1=0.0, t=t, alpha=t - 1.0)
    mv = H.MVSoftmax("arc", s=32.0, m=0.35, t=t)(cos, labels)
    torch.testing.assert_close(npc, mv, rtol=0, atol=1e-5)
    # the MV-softmax rule itself: hard negatives become t*cos + t - 1
    hard, _ = H.npcface_mask_and_margin(cos, labels, 0.35, 0.0)
    assert hard.any()
    torch.testing.assert_close(mv[hard], 32.0 * (t * cos[hard] + t - 1.0), rtol=1e-6, atol=1e-5)


def test_npcface_margin_bounds():
    m0, m1 = 0.4, 0.2
    for seed in range(5):
        cos, labels = random_cos(64, 200, seed=seed), torch.randint(0, 200, (64,))
        cos[:10, :] = -0.9  # rows with nothing hard except what beats a strong positive
        cos[torch.arange(10), labels[:10]] = 0.99
        hard, m_i = H.npcface_mask_and_margin(cos, labels, m0, m1)
        assert (m_i >= m0 - m1 - 1e-6).all() and (m_i <= m0 + m1 + 1e-6).all()
        no_hard = ~hard.any(1)
        assert no_hard[:10].all()
        assert (m_i[no_hard] == m0).all()  # exactly m0
        assert (m_i[~no_hard] != m0).any()
    # negative mean cosine -> margin below m0
    cos = torch.tensor([[-0.99, -0.5, -0.6]])
    _, m_i = H.npcface_mask_and_margin(cos, torch.tensor([0]), m0, m1)
    assert m_i.item() == pytest.approx(m0 + m1 * (-0.55), abs=1e-6)


def test_npcface_gradient_on_hard_negatives_is_s_t_p():
    s, t = 32.0, 1.1
    cos, labels = random_cos(8, 30, seed=5, spread=0.5), torch.arange(8) * 3
    x = cos.clone().requires_grad_(True)
    logits = H.npcface_logits(x, labels, s=s, t=t)
    F.cross_entropy(logits, labels, reduction="sum").backward()
    hard, _ = H.npcface_mask_and_margin(cos, labels)
    assert hard.sum() > 10
    ref_logits, _, _ = ref_npcface(cos.double().tolist(), labels.tolist(), s=s, t=t)
    for i in range(8):
        p = ref_softmax(ref_logits[i])
        for j in range(30):
            if j == labels[i]:
                continue
            want = (s * t if hard[i, j] else s) * p[j]
            assert x.grad[i, j].item() == pytest.approx(want, rel=1e-4, abs=1e-7)


def test_npcface_finite_at_extremes_and_under_autocast():
    cos, labels = edge_cos()
    for c in (cos, torch.ones_like(cos), -torch.ones_like(cos)):
        x = c.clone().requires_grad_(True)
        loss = F.cross_entropy(H.npcface_logits(x, labels), labels)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    # fp16 / bf16 autocast: the cosine comes out of a low-precision matmul, the head is fp32
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(16, 64, generator=g), dim=1).requires_grad_(True)
    w = torch.randn(100, 64, generator=g)
    w[torch.arange(16) * 6] = emb.detach() * 10  # cos == 1 up to rounding for the positives
    w = F.normalize(w, dim=1).requires_grad_(True)
    labels = torch.arange(16) * 6
    for dtype in (torch.float16, torch.bfloat16):
        with torch.autocast("cpu", dtype=dtype):
            cos = F.linear(emb, w)
            assert cos.dtype == dtype
            logits = H.npcface_logits(cos, labels)
            assert logits.dtype == torch.float32
            loss = F.cross_entropy(logits, labels)
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(emb.grad).all() and torch.isfinite(w.grad).all()
        emb.grad = w.grad = None


def test_npcface_head_module_matches_function_and_validates():
    cos, labels = random_cos(8, 20, seed=6), torch.arange(8)
    head = H.get_head("npcface", s=30.0, m0=0.3, m1=0.1, t=1.2, alpha=0.1)
    want = H.npcface_logits(cos, labels, s=30.0, m0=0.3, m1=0.1, t=1.2, alpha=0.1)
    torch.testing.assert_close(head(cos, labels), want)
    with pytest.raises(ValueError):
        H.NPCFace(t=0.9)
    with pytest.raises(ValueError):
        H.npcface_logits(cos, labels, positive="sphere")


# ----------------------------------------------------------------------------- other heads


def _rows(cos, labels):
    return cos.double().tolist(), labels.tolist()


@pytest.fixture
def batch():
    cos, labels = random_cos(12, 25, seed=7, spread=0.8), torch.randint(0, 25, (12,))
    cos[0, labels[0]] = 1.0
    cos[1, labels[1]] = -0.97  # beyond pi - m
    return cos, labels


def test_softmax_cosface_arcface(batch):
    cos, labels = batch
    rows, ys = _rows(cos, labels)
    soft = H.get_head("softmax", s=32.0)(cos, labels)
    np.testing.assert_allclose(soft.numpy(), 32.0 * np.array(rows), atol=1e-5)
    cf = H.get_head("cosface", s=64.0, m=0.35)(cos, labels)
    arc = H.get_head("arcface", s=64.0, m=0.5)(cos, labels)
    for i, y in enumerate(ys):
        for j, c in enumerate(rows[i]):
            cf_want = 64.0 * (c - 0.35 if j == y else c)
            arc_want = 64.0 * (ref_margined(c, 0.5) if j == y else c)
            assert cf[i, j].item() == pytest.approx(cf_want, abs=1e-4)
            assert arc[i, j].item() == pytest.approx(arc_want, abs=1e-4)


def test_sphereface(batch):
    cos, labels = batch
    rows, ys = _rows(cos, labels)
    m, s = 1.5, 64.0
    out = H.get_head("sphereface", s=s, m=m)(cos, labels)
    for i, y in enumerate(ys):
        theta = math.acos(max(-1 + 1e-6, min(1 - 1e-6, rows[i][y])))
        k = math.floor(m * theta / math.pi)
        psi = (-1) ** k * math.cos(m * theta) - 2 * k
        assert out[i, y].item() == pytest.approx(s * psi, abs=1e-3)
        assert out[i, (y + 1) % 25].item() == pytest.approx(s * rows[i][(y + 1) % 25], abs=1e-4)
    # psi is monotone decreasing in theta over [0, pi]
    c = torch.linspace(1, -1, 501).unsqueeze(1)
    psi = H.SphereFace(s=1.0, m=m)(c, torch.zeros(501, dtype=torch.long)).squeeze(1)
    assert (psi[1:] <= psi[:-1] + 1e-5).all()


@pytest.mark.parametrize("variant", ["arc", "am"])
def test_mv_softmax(batch, variant):
    cos, labels = batch
    rows, ys = _rows(cos, labels)
    s, m, t = 32.0, 0.35, 1.12
    out = H.get_head(f"mv_{variant}_softmax", s=s, m=m, t=t)(cos, labels)
    kind = "arc" if variant == "arc" else "cos"
    for i, y in enumerate(ys):
        thr = ref_margined(rows[i][y], m, kind)
        for j, c in enumerate(rows[i]):
            hard_want = s * (t * c + t - 1) if c > thr else s * c
            want = s * thr if j == y else hard_want
            assert out[i, j].item() == pytest.approx(want, abs=1e-4)


def test_curricularface_updates_t_then_uses_it(batch):
    cos, labels = batch
    rows, ys = _rows(cos, labels)
    head = H.get_head("curricularface", s=64.0, m=0.5, momentum=0.01)
    head.t.fill_(0.3)
    out = head(cos, labels)
    t = 0.99 * 0.3 + 0.01 * np.mean([rows[i][y] for i, y in enumerate(ys)])
    assert head.t.item() == pytest.approx(t, abs=1e-6)
    for i, y in enumerate(ys):
        thr = ref_margined(rows[i][y], 0.5)
        for j, c in enumerate(rows[i]):
            want = thr if j == y else (c * (t + c) if c > thr else c)
            assert out[i, j].item() == pytest.approx(64.0 * want, abs=1e-4)
    head.eval()
    head(cos, labels)
    assert head.t.item() == pytest.approx(t, abs=1e-6)  # no update outside training


def test_adacos_scale(batch):
    cos, labels = batch
    rows, ys = _rows(cos, labels)
    head = H.get_head("adacos", dynamic=False)
    out = head(cos, labels)
    s0 = math.sqrt(2) * math.log(25 - 1)
    np.testing.assert_allclose(out.numpy(), s0 * np.array(rows), rtol=1e-5, atol=1e-5)
    dyn = H.get_head("adacos")
    out = dyn(cos, labels)
    b_avg = np.mean(
        [
            sum(math.exp(s0 * c) for j, c in enumerate(r) if j != y)
            for r, y in zip(rows, ys, strict=True)
        ]
    )
    theta_med = sorted(math.acos(rows[i][y]) for i, y in enumerate(ys))[(len(ys) - 1) // 2]
    s1 = math.log(b_avg) / math.cos(min(math.pi / 4, theta_med))
    assert dyn.scale.item() == pytest.approx(s1, rel=1e-5)
    np.testing.assert_allclose(out.numpy(), s1 * np.array(rows), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", H.list_heads())
def test_every_head_fp32_finite_at_extremes(name):
    cos, labels = edge_cos()
    head = H.get_head(name)
    for c in (cos, torch.ones_like(cos), -torch.ones_like(cos)):
        x = c.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = head(x.to(torch.bfloat16), labels)
        assert logits.dtype == torch.float32
        F.cross_entropy(logits, labels).backward()
        assert torch.isfinite(logits).all() and torch.isfinite(x.grad).all(), name


def test_registry_errors_list_names():
    with pytest.raises(UnknownNameError, match="npcface") as exc:
        H.get_head("npc-face")
    assert "arcface" in str(exc.value)
    assert {"npcface", "arcface", "cosface", "sphereface", "softmax", "mv_softmax"} <= set(
        H.list_heads()
    )
    assert {"curricularface", "adacos", "mv_arc_softmax", "mv_am_softmax"} <= set(H.list_heads())
