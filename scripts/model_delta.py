"""Ship a fine-tuned model as the weights that differ from a base model, and rebuild it.

A GPU lease returns files of at most 16 MiB; a trained default model is 25 MB, of which the
frozen ImageNet backbone and the prior are the bundled model's, unchanged. So the lease
returns only what training changed:

    python scripts/model_delta.py make  TRAINED_DIR  BASE_DIR  DELTA.safetensors
    python scripts/model_delta.py apply DELTA.safetensors BASE_DIR TARGET_DIR

The delta holds the changed and new tensors, the trained model's config and its full key list,
so `apply` rebuilds exactly TRAINED_DIR's model.safetensors and config.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gcpcolor.serialization import read_safetensors, write_safetensors  # noqa: E402
from gcpcolor.weights import CONFIG_NAME, WEIGHTS_NAME  # noqa: E402


def make(trained: Path, base: Path, delta: Path) -> None:
    trained_weights, base_weights = read_safetensors(trained / WEIGHTS_NAME), read_safetensors(base / WEIGHTS_NAME)
    changed = {
        key: value
        for key, value in trained_weights.items()
        if key not in base_weights or not torch.equal(base_weights[key], value)
    }
    metadata = {"config": (trained / CONFIG_NAME).read_text(), "keys": json.dumps(sorted(trained_weights))}
    write_safetensors(delta, changed, metadata=metadata)
    print(f"{len(changed)} of {len(trained_weights)} tensors differ from {base}: {delta.stat().st_size / 2**20:.1f} MiB")


def apply(delta: Path, base: Path, target: Path) -> None:
    with safe_open(str(delta), "pt") as handle:
        metadata = handle.metadata()
    changed, base_weights = read_safetensors(delta), read_safetensors(base / WEIGHTS_NAME)
    keys = json.loads(metadata["keys"])
    missing = [key for key in keys if key not in changed and key not in base_weights]
    if missing:
        sys.exit(f"{base} lacks {len(missing)} tensors the delta needs, e.g. {missing[0]}")
    target.mkdir(parents=True, exist_ok=True)
    write_safetensors(target / WEIGHTS_NAME, {key: changed.get(key, base_weights.get(key)) for key in keys})
    (target / CONFIG_NAME).write_text(metadata["config"])
    print(f"rebuilt {target} from {base} and {delta}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["make", "apply"])
    parser.add_argument("paths", nargs=3, type=Path)
    args = parser.parse_args()
    (make if args.action == "make" else apply)(*args.paths)


if __name__ == "__main__":
    main()
