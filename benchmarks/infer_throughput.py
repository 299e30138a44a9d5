"""Throughput of ``monai-adaloss infer`` against the bare network forward on the same tensors.

Writes a synthetic fluoroscopy corpus (default 64 frames of 256 x 256 in single- and multi-frame
files, some compressed), saves a randomly initialised catheter U-Net checkpoint (the paper's 9-conv
network; weights do not change the speed), then measures, after one warm-up forward:

- command: frames/s of the whole run (``InferenceRunner.run()``: checkpoint loading, file listing,
  decoding workers, batched forward, heatmap decoding, records, fsync'ed logs, final merge), the
  same code path as ``monai-adaloss infer``, each repeat into a fresh output folder;
- forward: frames/s of the bare network forward (``torch.inference_mode``, same batch size and
  device) on the preprocessed tensors of the same files;

and prints both, their ratio (target >= 0.8 on CPU at 256 x 256), and the peak resident memory of
this process and of its largest child (a decoding worker). Run: ``python benchmarks/infer_throughput.py``.

The same checkpoint is also exported to TorchScript (``model.ts``) and ONNX (``model.onnx``, run by
onnxruntime on the CPU; needs the ``onnx`` extra), and the command and the bare forward are measured
for the three side by side (``--formats pt,ts,onnx``), with the largest absolute difference of each
exported model's heatmaps from the eager network's on the same tensors.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from monai_adaloss.export import export_onnx, export_torchscript
from monai_adaloss.inference import DecodeSettings, InferenceRunner, decode_file, load_checkpoint
from monai_adaloss.model_info import LandmarkModelInfo
from monai_adaloss.networks import catheter_unet
from monai_adaloss.synthetic import FluoroscopyConfig, make_dataset

NETWORK = {"_target_": "monai_adaloss.networks.catheter_unet", "in_channels": 1, "out_channels": 1}


def save_checkpoint(path: Path, size: int) -> Path:
    torch.manual_seed(0)
    info = LandmarkModelInfo(
        ["tip"], [size, size], NETWORK, {"reader": "XRayDicomReader", "apply_voi_lut": True, "resize_mode": "bilinear"},
        sigma=[5.0],
    )  # fmt: skip
    torch.save({"model": catheter_unet().state_dict(), "model_info": info.state_dict()}, path)
    return path


def command_rate(checkpoint: Path, inputs: Path, output_dir: Path, **kwargs: object) -> float:
    """Frames/s of one whole run into a fresh output folder."""
    runner = InferenceRunner(checkpoint, inputs, output_dir, progress=False, **kwargs)
    started = time.perf_counter()
    summary = runner.run()
    elapsed = time.perf_counter() - started
    assert summary.failed == 0, summary.line()
    return summary.frames / elapsed


def forward_rate(network: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """Frames/s of the bare forward over ``images`` in batches."""
    with torch.inference_mode():
        started = time.perf_counter()
        for batch in images.split(batch_size):
            network(batch.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return len(images) / (time.perf_counter() - started)


def _runs(rates: list[float]) -> str:
    return ", ".join(f"{rate:.1f}" for rate in rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--formats", default="pt,ts,onnx", help="model files to compare: pt, ts, onnx")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    command: dict[str, list[float]] = {f: [] for f in formats}
    forward: dict[str, list[float]] = {f: [] for f in formats}
    difference: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = FluoroscopyConfig(rows=args.size, columns=args.size)
        make_dataset(root / "corpus", 0, 0, args.frames, config=config, seed=0)
        inputs = root / "corpus" / "test"
        files = len(list(inputs.iterdir()))
        checkpoint = save_checkpoint(root / "model.pt", args.size)
        model = load_checkpoint(checkpoint)
        info = model.info.state_dict()
        paths = {"pt": checkpoint}
        if "ts" in formats:
            paths["ts"] = export_torchscript(model.network, root / "model.ts", info)
        if "onnx" in formats:
            paths["onnx"] = export_onnx(model.network, root / "model.onnx", info, in_channels=1)
        settings = DecodeSettings.from_model_info(model.info)
        images = torch.cat([torch.from_numpy(decode_file(str(p), settings).images) for p in sorted(inputs.iterdir())])
        networks = {name: load_checkpoint(path).network.to(device) for name, path in paths.items()}
        with torch.inference_mode():
            reference = networks["pt"](images[: args.batch_size].to(device)) if "pt" in networks else None
            for name, network in networks.items():
                forward_rate(network, images[: args.batch_size], args.batch_size, device)  # warm-up
                if reference is not None:
                    found = network(images[: args.batch_size].to(device))
                    difference[name] = float((found - reference).abs().max())
        for repeat in range(args.repeats):  # interleaved, so that a change in machine load hits all alike
            for name in formats:
                command[name].append(
                    command_rate(
                        paths[name], inputs, root / f"out_{name}{repeat}", batch_size=args.batch_size,
                        num_workers=args.num_workers, device=device,
                    )
                )  # fmt: skip
                forward[name].append(forward_rate(networks[name], images, args.batch_size, device))
    own_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"device {device}, {torch.get_num_threads()} torch threads, {args.frames} frames of {args.size}x{args.size} "
        f"in {files} files, catheter U-Net, batch {args.batch_size}, {args.num_workers} decoding workers"
    )
    print(f"{'model':<6} {'command frames/s':>17} {'forward frames/s':>17} {'ratio':>6} {'max |diff| vs eager':>20}")
    for name in formats:
        c, f = statistics.median(command[name]), statistics.median(forward[name])
        diff = f"{difference[name]:.2e}" if name in difference else "-"
        print(f"{name:<6} {c:17.1f} {f:17.1f} {c / f:6.2f} {diff:>20}")
        print(f"         runs: command {_runs(command[name])}; forward {_runs(forward[name])}")
    print(f"peak RSS: this process {own_mb:.0f} MiB, largest child (decoding worker) {child_mb:.0f} MiB")
    if device.type == "cuda":
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
