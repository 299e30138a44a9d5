"""Eager vs TorchScript vs ONNX (onnxruntime, CPU) heatmaps of every bundle's network at its default size.

For each bundle: the network of ``configs/train.json`` with its default values (random weights, seed 0,
BatchNorm running statistics randomised so that eval mode is not an identity), scripted with
``torch.jit.script`` and exported with ``monai_adaloss.export.export_onnx`` (opset 18, dynamic batch); the
largest absolute difference of each from the eager output on the same random batch of 2, and the
forward frames/s of each (after one warm-up call). Run: ``python benchmarks/export_equivalence.py``
(needs the ``onnx`` extra; ``--bundles`` to pick some).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch
from monai.bundle import ConfigParser

from monai_adaloss.bundles import available_bundles, bundle_path
from monai_adaloss.export import export_onnx, input_channels


def _rate(call, x: torch.Tensor, repeats: int = 2) -> float:
    call(x)  # warm-up (TorchScript's profiling executor optimises on the first calls)
    started = time.perf_counter()
    for _ in range(repeats):
        call(x)
    return repeats * len(x) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", nargs="*", default=available_bundles())
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} torch threads; batch {args.batch}; random weights")
    header = ("bundle", "input", "|ts-eager|", "|onnx-eager|", "eager/s", "ts/s", "onnx/s")
    print("{:<28} {:<14} {:>11} {:>13} {:>8} {:>8} {:>8}".format(*header))
    for name in args.bundles:
        config = ConfigParser()
        config.read_config(str(bundle_path(name) / "configs" / "train.json"))
        torch.manual_seed(0)
        network = config.get_parsed_content("network_def")
        for module in network.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        network.eval()
        info = config.get_parsed_content("model_info").state_dict()
        x = torch.rand(args.batch, input_channels(network), *info["input_size"])
        scripted = torch.jit.script(network)
        with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
            path = export_onnx(network, Path(tmp) / "model.onnx", info, input_channels(network))
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            eager = network(x)
            ts_diff = float((scripted(x) - eager).abs().max())
            onnx_out = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
            onnx_diff = float((onnx_out - eager).abs().max())
            rates = [
                _rate(network, x),
                _rate(scripted, x),
                _rate(lambda t, run=session.run: run(None, {"image": t.numpy()}), x),
            ]
        size = "x".join(str(s) for s in info["input_size"])
        print(f"{name:<28} {size:<14} {ts_diff:11.2e} {onnx_diff:13.2e} " + " ".join(f"{r:8.2f}" for r in rates))


if __name__ == "__main__":
    main()
