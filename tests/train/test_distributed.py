"""Two CPU processes under torchrun (gloo) stay in lockstep through meta pre-training and QGR fine-tuning."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from graded_corpus import make_graded_corpus

# Runs on each rank: meta pre-training then QGR fine-tuning (validation decisions broadcast from
# rank 0), then the sha256 of the whole state dict and the rank's first training shard.
DRIVER = textwrap.dedent('''
    import hashlib, json, sys
    import torch
    torch.set_num_threads(1)
    from grmp_edge.data.manifest import load_manifest
    from grmp_edge.train.datasets import QualityDataset, make_loader
    from grmp_edge.train.distributed import setup_runtime
    from grmp_edge.train.finetune import FinetuneConfig, finetune
    from grmp_edge.train.meta import MetaConfig, meta_train
    from grmp_edge.train.run import TrainPlan, build_start_model

    source, target, out = sys.argv[1:4]
    runtime = setup_runtime("cpu")
    plan = TrainPlan(data=target, backbone="grmp-tiny", pretrained=None, vpt_tokens=2, seed=runtime.rank)
    model = build_start_model(plan, runtime)  # seeded per rank on purpose: the broadcast must align them
    meta_train(model, [load_manifest(source)], MetaConfig(epochs=1, support_batch=4, query_batch=2,
               holdout_fraction=0.34), runtime)
    records = load_manifest(target)
    result = finetune(model, records[:8], records[8:12], FinetuneConfig(lr=0.3, max_epochs=3, patience=0,
                      unfreeze_blocks=1), runtime)
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    loader = make_loader(QualityDataset(records[:8], model.spec.preprocess, train=True), 8, True, 0, runtime)
    shard = [float(label) for _, labels in loader for label in labels]
    with open(f"{out}/rank{runtime.rank}.json", "w") as f:
        json.dump({"hash": digest.hexdigest(), "world": runtime.world_size, "shard": shard,
                   "lrs": [r["lr"] for r in result.history], "best_epoch": result.best_epoch}, f)
    runtime.close()
''')


@pytest.mark.timeout(240)
def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    import json

    source = make_graded_corpus(tmp_path / "source", refs=2, levels=3, kinds=("noise", "impulse", "speckle"))
    target = make_graded_corpus(tmp_path / "target", refs=3, levels=4, kinds=("noise",), seed=1)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           str(driver), str(source), str(target), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=220)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["shard"] != ranks[1]["shard"], "both ranks saw the same data"
    assert ranks[0]["lrs"] == ranks[1]["lrs"] and ranks[0]["best_epoch"] == ranks[1]["best_epoch"]
    assert ranks[0]["hash"] == ranks[1]["hash"]
