"""Make the INT8 recipe of a recogniser (offline, once): NNCF post-training quantisation.

    pip install nncf            # only here; the SDK applies the recipe without it
    python bench/make_int8_recipe.py --calib ../shared/data/celeba-subset [--model sface]
        [--photos 500] [--preset mixed] [--fp32 conv_1_conv2d] [--out sdk/recipes/sface_int8.json]

Calibration crops: every k-th photo of the celeba-subset (never LFW), detected, chosen and
aligned by ``FaceRecognizer()`` (the default pipeline, so the crops look like the ones the
recogniser will see). NNCF quantises the prepared fp32 graph (QDQ, per-channel symmetric
weights, activations per NNCF's ``--preset``), leaving the nodes named by ``--fp32`` (and
their inputs) unquantised; :func:`npcface.int8.extract_recipe` keeps only
the learned scales, and the script checks that :func:`npcface.int8.apply_recipe` on the
fp32 graph rebuilds a model whose embeddings equal NNCF's on the calibration crops.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import onnx

from npcface import FaceRecognizer
from npcface.int8 import apply_recipe, extract_recipe
from npcface.models import resolve_model_file
from npcface.runtime import OrtRunner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib", default="../shared/data/celeba-subset")
    ap.add_argument("--model", default="sface")
    ap.add_argument("--photos", type=int, default=500)
    ap.add_argument("--preset", default="mixed", choices=["mixed", "performance"])
    ap.add_argument(
        "--fp32",
        nargs="*",
        default=["conv_1_conv2d"],
        metavar="NODE",
        help="nodes left in fp32 (NNCF's ignored scope). Default: SFace's first convolution, "
        "whose INT8 input and weights cost the most on turned faces (docs/accuracy.md)",
    )
    ap.add_argument("--out", default="sdk/recipes/sface_int8.json")
    ap.add_argument("--keep", default=None, help="also save NNCF's quantised ONNX here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import nncf  # offline only

    photos = sorted(Path(args.calib).glob("*/*.jpg"))
    photos = photos[:: max(1, len(photos) // args.photos)][: args.photos]
    rec = FaceRecognizer()
    crops = np.stack([r.crop for r in rec.crop_many(photos, size=112) if r.ok])
    x = np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32))
    src = resolve_model_file(args.model)
    fp32 = onnx.load(str(src))
    name = fp32.graph.input[0].name
    t0 = time.perf_counter()
    dataset = nncf.Dataset([x[i : i + 1] for i in range(len(x))], lambda b: {name: b})
    quantized = nncf.quantize(
        onnx.load(str(src)),
        dataset,
        preset=getattr(nncf.QuantizationPreset, args.preset.upper()),
        subset_size=len(x),
        ignored_scope=nncf.IgnoredScope(names=list(args.fp32)) if args.fp32 else None,
    )
    seconds = time.perf_counter() - t0
    recipe = extract_recipe(quantized, fp32)
    recipe["source"] = {
        "model": args.model,
        "fp32_file_sha256": __import__("hashlib").sha256(src.read_bytes()).hexdigest(),
        "tool": f"nncf {nncf.__version__}, QuantizationPreset.{args.preset.upper()}",
        "calibration": f"{len(x)} aligned crops of {len(photos)} photos of {args.calib} "
        "(every k-th photo), FaceRecognizer() defaults; never LFW",
        "fp32_nodes": list(args.fp32),
        "command": "python bench/make_int8_recipe.py "
        f"--calib {args.calib} --model {args.model} --photos {args.photos} --preset {args.preset}"
        + (f" --fp32 {' '.join(args.fp32)}" if args.fp32 else " --fp32"),
    }

    # the recipe rebuilds NNCF's model: same embeddings on the calibration crops
    rebuilt = onnx.load(str(src))
    apply_recipe(rebuilt, recipe)
    with_nncf, with_recipe = (Path(args.out).with_suffix(s) for s in (".nncf.onnx", ".rb.onnx"))
    onnx.save(quantized, str(with_nncf))
    onnx.save(rebuilt, str(with_recipe))
    try:
        a = OrtRunner(with_nncf).run(x[:64])[0]
        b = OrtRunner(with_recipe).run(x[:64])[0]
    finally:
        with_recipe.unlink()
        if args.keep:
            with_nncf.replace(args.keep)
        else:
            with_nncf.unlink()
    worst = float(np.abs(a - b).max() / np.abs(a).max())
    print(f"NNCF took {seconds:.0f} s; rebuilt vs NNCF max relative difference {worst:.2e}")
    if worst > 1e-5:
        raise SystemExit("the recipe does not rebuild NNCF's model")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(recipe, indent=1) + "\n")
    print(
        f"wrote {args.out}: {len(recipe['activations'])} activations, "
        f"{len(recipe['weights'])} weights"
    )


if __name__ == "__main__":
    main()
