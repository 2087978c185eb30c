"""Two-process CPU training under torchrun (gloo): the replicas must stay identical.

The test launches this file itself under torchrun; run as a script, it trains one tiny config
on every rank and writes what the test compares (a hash of the rank's trainable parameters,
the data indices the rank was given, its steps) to `<out>/rank<r>.json`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
WORLD_SIZE = 2


def parameter_hash(modules: dict) -> str:
    digest = hashlib.sha256()
    for name, module in sorted(modules.items()):
        for key, parameter in module.named_parameters():
            digest.update(f"{name}.{key}".encode())
            digest.update(parameter.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def worker(stage: int, out_dir: Path, overrides: list[str]) -> None:
    from gcpcolor.training.config import load_train_config
    from gcpcolor.training.distributed import setup_distributed, teardown_distributed
    from gcpcolor.training.run import TRAINERS

    config = load_train_config(stage, CONFIGS / "smoke" / f"stage{stage}_tiny.yaml", overrides)
    context = setup_distributed(config.device)
    try:
        trainer = TRAINERS[stage](config, None, context)
        initial_hash = parameter_hash(trainer.trainable_modules())
        trainer.sampler.set_epoch(0)
        epoch0_indices = [index for index, _seed in trainer.sampler]
        result = trainer.train()
        report = {
            "rank": context.rank,
            "world_size": context.world_size,
            "initial_hash": initial_hash,
            "final_hash": parameter_hash(trainer.trainable_modules()),
            "epoch0_indices": epoch0_indices,
            "steps": len(result.history),
            "final_dir": str(result.final_dir) if result.final_dir else None,
        }
    finally:
        teardown_distributed(context)
    (out_dir / f"rank{report['rank']}.json").write_text(json.dumps(report))


def write_photos(folder: Path, count: int) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = ["file,imagenet_index"]
    for index in range(count):
        height, width = int(rng.integers(64, 257)), int(rng.integers(64, 257))
        yy, xx = np.mgrid[0:height, 0:width] / 256
        image = np.stack([0.5 + 0.45 * np.sin(rng.uniform(2, 12) * xx + rng.uniform(2, 12) * yy + c)
                          for c in rng.uniform(0, 6, 3)], axis=-1)
        Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"p{index}.png")
        rows.append(f"p{index}.png,{index * 37}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def run_torchrun(tmp_path: Path, stage: int, overrides: list[str]) -> list[dict]:
    photos = write_photos(tmp_path / "photos", 4)
    output_dir = tmp_path / "run"
    overrides = [f"data.root={photos}", f"checkpoint.output_dir={output_dir}",
                 "logging.progress_bar=false", "device=cpu", *overrides]
    report_dir = tmp_path / "reports"
    report_dir.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={WORLD_SIZE}", __file__, "--stage", str(stage), "--out", str(report_dir)]
    for override in overrides:
        command += ["--set", override]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, cwd=REPO)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    return [json.loads((report_dir / f"rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]


def check_replicas(reports: list[dict], steps: int, output_dir: Path) -> None:
    assert [r["world_size"] for r in reports] == [WORLD_SIZE] * WORLD_SIZE
    assert [r["steps"] for r in reports] == [steps] * WORLD_SIZE
    # Same initialisation, training moved the weights, and the replicas ended identical.
    assert len({r["initial_hash"] for r in reports}) == 1
    assert reports[0]["final_hash"] != reports[0]["initial_hash"]
    assert len({r["final_hash"] for r in reports}) == 1
    # Each rank got its own half of the data.
    shares = [set(r["epoch0_indices"]) for r in reports]
    assert not shares[0] & shares[1] and shares[0] | shares[1] == {0, 1, 2, 3}
    # Rank 0 alone wrote the checkpoints, the export and the TensorBoard events.
    assert reports[0]["final_dir"] == str(output_dir / "final") and reports[1]["final_dir"] is None
    assert (output_dir / "checkpoints" / "latest").is_file()
    assert len(list((output_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_two_process_stage1_keeps_replicas_identical(tmp_path):
    # 4 photos / 2 ranks, batch 1 and 2 micro-batches per step: one step per epoch, two epochs;
    # the first micro-batch of each step runs under no_sync.
    reports = run_torchrun(tmp_path, 1, ["optim.batch_size=1", "optim.grad_accumulation=2",
                                         "optim.max_steps=2", "checkpoint.save_every=1", "optim.lr=1e-3"])
    check_replicas(reports, steps=2, output_dir=tmp_path / "run")


def test_two_process_stage2_unused_matching_layers_keep_replicas_identical(tmp_path):
    # guidance none leaves the matching layers without gradient: DDP's find_unused_parameters
    # path, where a wrongly returned graph silently stops the all-reduce.
    reports = run_torchrun(tmp_path, 2, ["optim.batch_size=1", "optim.max_steps=1", "guidance=none",
                                         "optim.lr=1e-3"])
    check_replicas(reports, steps=1, output_dir=tmp_path / "run")


@pytest.mark.slow
def test_two_process_stage2_with_accumulation_keeps_replicas_identical(tmp_path):
    reports = run_torchrun(tmp_path, 2, ["optim.batch_size=1", "optim.grad_accumulation=2",
                                         "optim.max_steps=2", "optim.lr=1e-3"])
    check_replicas(reports, steps=2, output_dir=tmp_path / "run")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one rank of the distributed training test")
    parser.add_argument("--stage", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    arguments = parser.parse_args()
    worker(arguments.stage, arguments.out, arguments.overrides)
