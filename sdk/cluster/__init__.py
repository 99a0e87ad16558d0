"""Group unlabelled faces into people: embeddings (or a gallery's templates) in, groups out.

Like the gallery, this package knows nothing of images: photos become embeddings through
:meth:`npcface.FaceRecognizer.embed_many` (or ``represent_all``), and groups become
identities through a :class:`~npcface.Gallery`.

* :func:`cluster_embeddings` / :class:`Clusterer`: average linkage over a FAISS neighbour
  graph, thresholds calibrated from impostor statistics and set for each face by how densely
  strangers surround it (:mod:`npcface.cluster.density`); incremental updates.
* :class:`FaceGroups`: a collection kept on disk (SQLite) with the corrections people make
  (name, merge, split, move, "not this person"), which every later run respects.

Example::

    from npcface import FaceRecognizer
    from npcface.cluster import cluster_embeddings

    rec = FaceRecognizer()
    embs = [r.embedding for r in rec.embed_many(paths) if r.ok]
    groups = cluster_embeddings(np.stack(embs))
    groups.labels          # group of each face, -1: noise
"""

from npcface.cluster.clusterer import (
    NOISE,
    Clusterer,
    Clustering,
    Constraints,
    cluster_embeddings,
)
from npcface.cluster.store import FaceGroups, FaceInfo, GroupInfo
from npcface.cluster.thresholds import ClusterCalibration, Thresholds, calibrate_clustering

__all__ = [
    "NOISE",
    "ClusterCalibration",
    "Clusterer",
    "Clustering",
    "Constraints",
    "FaceGroups",
    "FaceInfo",
    "GroupInfo",
    "Thresholds",
    "calibrate_clustering",
    "cluster_embeddings",
]
