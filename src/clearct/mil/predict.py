"""``clearct predict SCAN``: one scan → frozen encoder features (in memory) → fold ensemble →
``prediction.json`` (score per output, thresholded calls, encoder and model provenance), ``attention.csv`` and
``attention.png`` (profile over z per window + the most attended slices), and a short table on stdout.

The HU windows are the ones the model's training features were extracted with (stored with every model), so a
model trained on lung+abdomen features is always fed lung+abdomen features.
"""

from __future__ import annotations

import json

import numpy as np

from clearct import __version__
from clearct.common.atomic import atomic_write_text
from clearct.common.device import resolve_device
from clearct.common.runs import start_run
from clearct.evaluate.tables import write_csv
from clearct.mil.attention import attention_rows, check_encoder
from clearct.mil.data import Bag
from clearct.mil.store import load_ensemble, require_mil
from clearct.report.attention import attention_figure


def run_predict(cfg) -> int:
    from clearct.encoders import create_encoder
    from clearct.extract import embed_volume
    from clearct.io import read_ct
    from clearct.preprocess import Window

    out = start_run(cfg.out, "predict", cfg)
    device = resolve_device(cfg.device)
    ensemble = load_ensemble(cfg.model, device)
    require_mil(ensemble, "predict", cfg.model)
    volume = read_ct(cfg.scan_path, series=cfg.series)
    # the size the models' training features were embedded at (a run folder resized on purpose stays resized)
    size = ensemble.encoder.get("image_size")
    encoder = create_encoder(cfg.encoder, weights=cfg.weights, image_size=size, allow_resize=True).to(device).eval()
    windows = [Window(str(n), float(lo), float(hi)) for n, lo, hi in ensemble.windows]
    f = embed_volume(volume, encoder, windows, batch_size=cfg.batch_size, device=device)
    check_encoder(ensemble, {"encoder": f.encoder, "weights_sha256": f.weights_sha256, "image_size": f.image_size},
                  cfg.scan_path)
    bag = Bag(f.scan_id, f.patient_id, f.feats.astype(np.float32), f.window.astype(np.int64),
              f.slice_index.astype(np.int32), f.z_mm.astype(np.float32), np.zeros(0, np.float32))
    scores, attn = ensemble.predict([bag])
    spec = ensemble.spec
    names = spec.output_names
    thresholds = ensemble.thresholds
    calls = {}
    if spec.kind in ("multilabel", "binary"):
        calls = {n: bool(scores[0, j] >= thresholds[j]) for j, n in enumerate(names)}
    elif spec.kind == "multiclass":
        calls = {spec.targets[0]: names[int(np.argmax(scores[0]))]}
    result = {
        "scan": str(cfg.scan_path), "scan_id": f.scan_id, "slices": int(volume.hu.shape[0]),
        "task": spec.kind, "scores": {n: float(scores[0, j]) for j, n in enumerate(names)},
        "thresholds": {n: float(t) for n, t in zip(names, thresholds)} if spec.kind != "multiclass" else {},
        "predictions": calls,
        "encoder": {"name": f.encoder, "weights_sha256": f.weights_sha256, "image_size": f.image_size,
                    "windows": ensemble.windows},
        "model": {"folder": str(cfg.model), "models": [m["job"] for m in ensemble.metas],
                  "trained_with": ensemble.metas[0].get("clearct_version"),
                  "training_patients": len(ensemble.training_patients)},
        "clearct_version": __version__,
    }
    atomic_write_text(out / "prediction.json", json.dumps(result, indent=1))
    write_csv(out / "attention.csv", attention_rows(bag, attn[0], ensemble.windows))
    attention_figure(out / "attention.png", title=f"{f.scan_id}: attention of {len(ensemble.models)} fold models",
                     z_mm=bag.z_mm, window=bag.window, slice_index=bag.slice_index, attention=attn[0],
                     windows=ensemble.windows, hu=volume.hu, top_k=cfg.top_k)
    print(f"{'output':24s} {'score':>8s}  call")
    for j, n in enumerate(names):
        call = calls.get(n, "")
        print(f"{n:24s} {scores[0, j]:8.3f}  {call}")
    print(f"prediction: {out / 'prediction.json'}, attention: {out / 'attention.png'}")
    return 0
