"""Cost of the adapter-base fingerprint (seedvlm.models.fingerprint) on a full-size model in memory: the embeddings
and every LM projection (q/k/v/o, gate/up/down) sampled and hashed.

    python benchmarks/fingerprint_cost.py --preset llava-1.5-7b --devices cuda,cpu --out R.json
"""
import argparse
import statistics
import time
from pathlib import Path

import torch

from common import device_name, emit, provenance, random_llava, sync


def main(argv=None):
    from seedvlm.models import preset_config
    from seedvlm.models.fingerprint import base_fingerprint, projection_weights

    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="llava-1.5-7b")
    p.add_argument("--devices", default="cuda,cpu", help="built on the first, then moved")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    devs = [torch.device(d) for d in a.devices.split(",")]
    model = random_llava(preset_config(a.preset), devs[0], torch.bfloat16)
    rows = []
    for d in devs:
        model = model.to(d)
        fp, times = base_fingerprint(model), []
        for _ in range(a.repeats):
            sync(d)
            t0 = time.perf_counter()
            assert base_fingerprint(model) == fp
            sync(d)
            times.append(1000 * (time.perf_counter() - t0))
        proj = projection_weights(model)
        rows.append({"device": device_name(d), "fingerprint": fp, "tensors": len(proj) + 1,
                     "projection_params": sum(w.numel() for _, w in proj),
                     "median_ms": statistics.median(times), "min_ms": min(times)})
    assert len({r["fingerprint"] for r in rows}) == 1, "device-dependent fingerprint"
    table = "| device | tensors | projection params | median ms | min ms |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {r['device']} | {r['tensors']} | {r['projection_params'] / 1e9:.2f}B | {r['median_ms']:.1f} | "
        f"{r['min_ms']:.1f} |" for r in rows)
    emit({"benchmark": "fingerprint_cost", "preset": a.preset, "dtype": "bfloat16", "results": rows,
          **provenance(__file__, argv)}, table, a.out)


if __name__ == "__main__":
    main()
