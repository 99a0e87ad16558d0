"""1:N identification through a :class:`~npcface.gallery.Gallery`: closed-set rank-k and
open-set TPIR@FPIR, with an LFW-based protocol.

LFW protocol (``lfw_identify_protocol``):

* gallery: the first image (by number) of every person with two or more images, plus the
  only image of every single-image person as a distractor identity: 5,749 identities;
* probes: every other image of the people with two or more images (7,484 mated probes).

Open set uses each probe twice, as NIST FRVT does with leave-identity-out searches: as a
*mated* search (is its identity the top candidate, and how similar?) and as a *non-mated*
search of a gallery without its identity (the best similarity among the other identities,
i.e. what the gallery would answer if the person had never been enrolled). TPIR@FPIR is then
the fraction of mated searches whose top candidate is right *and* passes the threshold at
which that fraction of non-mated searches passes it (metrics in :mod:`npcface.eval.metrics`).

Images that give no embedding are never dropped: a probe without an embedding, or whose
identity's gallery image failed, counts as a miss in every rate.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import rank_k_accuracy, tpir_at_fpir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IdentifyProtocol:
    """Which images are enrolled and which are searched.

    Attributes:
        name: protocol name for reports.
        gallery: (image path, identity) enrolled, one or more per identity.
        probes: (image path, identity) searched; every probe's identity is in the gallery.
    """

    name: str
    gallery: list[tuple[Path, str]]
    probes: list[tuple[Path, str]]

    @property
    def gallery_identities(self) -> int:
        return len({identity for _, identity in self.gallery})

    @property
    def mated_identities(self) -> int:
        return len({identity for _, identity in self.probes})


def lfw_identify_protocol(lfw_dir: str | Path, max_people: int | None = None) -> IdentifyProtocol:
    """The LFW 1:N protocol described in the module docstring.

    Args:
        lfw_dir: LFW root (holding ``images/<Name>/<Name>_NNNN.jpg``).
        max_people: use only the first ``max_people`` people in name order (smoke tests).

    Raises:
        FileNotFoundError: no ``images`` folder.
    """
    root = Path(lfw_dir) / "images"
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no LFW images folder (expected images/<Name>/*.jpg)")
    people = sorted(p for p in root.iterdir() if p.is_dir())
    if max_people is not None:
        people = people[:max_people]
    gallery: list[tuple[Path, str]] = []
    probes: list[tuple[Path, str]] = []
    for person in people:
        files = sorted(f for f in person.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not files:
            continue
        gallery.append((files[0], person.name))
        probes.extend((f, person.name) for f in files[1:])
    return IdentifyProtocol("lfw-identify", gallery, probes)


@dataclass(frozen=True)
class _Searches:
    valid: np.ndarray  # probes with an embedding whose identity is enrolled
    mated_score: np.ndarray  # top-1 similarity of each valid probe
    mated_correct: np.ndarray  # its top-1 identity is the probe's
    nonmated_score: np.ndarray  # best similarity among the other identities
    rank1_gallery: float  # rank-1 over all probes from the gallery's answers


def evaluate_identification(
    gallery_embeddings: np.ndarray,
    gallery_labels: Sequence[str],
    probe_embeddings: np.ndarray,
    probe_labels: Sequence[str],
    *,
    probe_ok: np.ndarray | None = None,
    gallery_ok: np.ndarray | None = None,
    ranks: Sequence[int] = (1, 5),
    fpirs: Sequence[float] = (1e-1, 1e-2, 1e-3),
) -> dict[str, Any]:
    """Rank-k and TPIR@FPIR of probes searched in a gallery built from the given embeddings.

    Args:
        gallery_embeddings: (G, d) unit embeddings to enroll.
        gallery_labels: (G,) identity of each.
        probe_embeddings: (P, d) unit embeddings to search.
        probe_labels: (P,) identity of each (all enrolled when nothing failed).
        probe_ok: (P,) False for probes that have no embedding (counted as misses).
        gallery_ok: (G,) False for gallery images that have no embedding (not enrolled).
        ranks: ranks k for closed-set rank-k accuracy.
        fpirs: false positive identification rates for open-set TPIR.

    Returns:
        A JSON-friendly report: ``rank{k}``, ``tpir@fpir={f}``, ``threshold@fpir={f}``, counts.
    """
    from ..gallery import Gallery

    g_lab = np.asarray(gallery_labels, dtype=object)
    p_lab = np.asarray(probe_labels, dtype=object)
    g_ok = np.ones(len(g_lab), bool) if gallery_ok is None else np.asarray(gallery_ok, bool)
    p_ok = np.ones(len(p_lab), bool) if probe_ok is None else np.asarray(probe_ok, bool)
    g_emb = np.asarray(gallery_embeddings, np.float32)[g_ok]
    g_names = g_lab[g_ok]
    enrolled = set(g_names.tolist())
    valid = p_ok & np.array([lab in enrolled for lab in p_lab], dtype=bool)
    num_probes = len(p_lab)
    q = np.asarray(probe_embeddings, np.float32)[valid]
    q_lab = p_lab[valid]
    k = max(max(ranks), 2)

    with tempfile.TemporaryDirectory(prefix="npcface-identify-") as tmp:
        gallery = Gallery.create(Path(tmp) / "gallery", dim=g_emb.shape[1])
        try:
            gallery.add_many([str(n) for n in g_names], g_emb)
            t0 = time.perf_counter()
            results = gallery.search(q, k=k) if len(q) else []
            search_s = time.perf_counter() - t0
            factory = gallery.factory
        finally:
            gallery.close()

    mated_score = np.array([r[0].similarity for r in results], np.float64)
    mated_correct = np.array([r[0].identity == lab for r, lab in zip(results, q_lab, strict=True)])
    # leave-identity-out: the best other identity is what a gallery without the probe's
    # identity would answer (present in the top k >= 2 whenever another identity exists)
    others = [
        next((m.similarity for m in r if m.identity != lab), None)
        for r, lab in zip(results, q_lab, strict=True)
    ]
    nonmated = np.array([s for s in others if s is not None], np.float64)

    report: dict[str, Any] = {
        "gallery_images": int(len(g_lab)),
        "gallery_identities": int(len(set(g_lab.tolist()))),
        "enrolled_identities": len(enrolled),
        "probes": int(num_probes),
        "probes_searched": int(valid.sum()),
        "probes_missed_no_embedding": int((~p_ok).sum()),
        "probes_missed_identity_not_enrolled": int((p_ok & ~valid).sum()),
        "nonmated_searches": int(len(nonmated)),
        "gallery_index": factory,
        "search_ms_per_probe": 1000.0 * search_s / max(len(q), 1),
    }
    scale = float(valid.sum()) / max(num_probes, 1)  # misses dilute every rate
    if len(q):
        sims = q @ g_emb.T  # exact scores for the shared metric
        by_rank = rank_k_accuracy(sims, q_lab.astype(str), g_names.astype(str), ks=tuple(ranks))
        for r in ranks:
            report[f"rank{r}"] = by_rank[r] * scale
        report["rank1_from_gallery_search"] = float(mated_correct.mean()) * scale
        for f in fpirs if nonmated.size else ():
            tpir, thr = tpir_at_fpir(mated_score, mated_correct, nonmated, f)
            report[f"tpir@fpir={f:g}"] = tpir * scale
            report[f"threshold@fpir={f:g}"] = thr
    return report


def run_lfw_identify(
    lfw_dir: str | Path,
    recognizer: Any,
    *,
    progress: bool = True,
    batch_size: int = 64,
    ranks: Sequence[int] = (1, 5),
    fpirs: Sequence[float] = (1e-1, 1e-2, 1e-3),
    max_people: int | None = None,
) -> dict[str, Any]:
    """Run the LFW 1:N protocol with ``recognizer``; a JSON-friendly report.

    Args:
        lfw_dir: LFW root folder.
        recognizer: a :class:`~npcface.FaceRecognizer` (its face policy picks the face).
        progress: show a progress bar while embedding.
        batch_size: crops per recogniser call.
        ranks: closed-set ranks to report.
        fpirs: open-set false positive identification rates to report.
        max_people: restrict to the first people by name (for quick checks).
    """
    from .lfw import embed_paths

    t0 = time.perf_counter()
    proto = lfw_identify_protocol(lfw_dir, max_people=max_people)
    paths = [p for p, _ in proto.gallery] + [p for p, _ in proto.probes]
    table = embed_paths(recognizer, paths, batch_size=batch_size, progress=progress)
    ok = np.array([p not in table.failed for p in table.paths], dtype=bool)
    g = len(proto.gallery)
    report = {
        "protocol": proto.name,
        "model": recognizer.info.name,
        "face_policy": recognizer.face_policy,
        "flip": bool(getattr(recognizer, "flip", False)),
        "mated_identities": proto.mated_identities,
        "distractor_identities": proto.gallery_identities - proto.mated_identities,
    }
    report.update(
        evaluate_identification(
            table.embeddings[:g],
            [lab for _, lab in proto.gallery],
            table.embeddings[g:],
            [lab for _, lab in proto.probes],
            probe_ok=ok[g:],
            gallery_ok=ok[:g],
            ranks=ranks,
            fpirs=fpirs,
        )
    )
    report["failed_images"] = sorted(str(p) for p in table.failed)
    report["seconds"] = time.perf_counter() - t0
    return report
