"""Helpers of the export / generic-consumer tests: a tiny bundle model, README commands, MONAI Deploy's loading path."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
from conftest import preloaded_command
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from monai_adaloss.bundles import bundle_path
from monai_adaloss.export import write_model_info_json

# the tiny versions of the bundles' networks (the bundle tests' overrides)
TINY = {
    "catheter_tip_fluoro": {"input_size": [32, 32], "network_channels": [4, 8, 16]},
    "endoscopic_tool_landmarks": {"input_size": [40, 32], "network_channels": [4, 8, 16]},
    "face_landmarks_300w": {"input_size": [32, 32], "init_channels": 4, "growth_rate": 4},
    "hand_xray_landmarks": {"input_size": [32, 32], "network_channels": [4, 8, 16]},
    "landmarks_3d": {"input_size": [24, 24, 24], "network_channels": [4, 8, 16]},
}


def make_bundle_model(name: str, root: Path, seed: int = 0) -> dict[str, Any]:
    """Copy the bundle to ``root`` and write ``models/model.pt`` + ``models/model_info.json`` of a tiny model.

    What training saves (``{"model", "model_info"}`` and the sidecar), with the tiny overrides and
    seeded random weights (BatchNorm statistics randomised too, so eval mode is not the identity).
    Returns the model info.
    """
    shutil.copytree(bundle_path(name), root, dirs_exist_ok=True)
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "train.json"))
    parser["bundle_root"] = str(root)
    for key, value in TINY[name].items():
        parser[key] = value
    torch.manual_seed(seed)
    network = parser.get_parsed_content("network_def")
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    info = parser.get_parsed_content("model_info").state_dict()
    (root / "models").mkdir(parents=True, exist_ok=True)
    torch.save({"model": network.state_dict(), "model_info": info}, root / "models" / "model.pt")
    write_model_info_json(info, root / "models" / "model_info.json")
    return info


def readme_command(readme: Path, marker: str) -> list[str]:
    """The shell command of the first ```bash block line holding ``marker`` (continuations joined), as argv."""
    text = readme.read_text(encoding="utf-8")
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            if marker in line:
                argv = shlex.split(line)
                return [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
    raise AssertionError(f"no command with {marker!r} in {readme}")


def run(
    argv: list[str], cwd: Path, preloaded: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``argv``; with ``preloaded`` (the ``preloaded_python`` fixture's variables) in a fork of the preloaded
    interpreter where it can run as a fresh one would (``preloaded_python.py``), else in a fresh process."""
    env = None
    if preloaded is not None:
        argv = preloaded_command(argv)
        env = {**os.environ, **preloaded}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


# MONAI Deploy's MonaiBundleInferenceOperator, reproduced (monai-deploy-app-sdk 4.0 pulls holoscan-cu13,
# cupy-cuda13x and cuda-python, so it is not installed here): get_bundle_config reads `metadata` and the named
# configs from the TorchScript archive's extra files, ConfigParser.parse(); the pre-/post-processing Composes
# lose every transform whose class name holds "LoadImage" / "SaveImage"; the image arrives in memory as a
# MetaTensor; the network is torch.jit.load(model.ts); postprocessing gets {output name: network output} plus
# the pre-processed inputs.
DISALLOW_LOAD_SAVE = ("LoadImage", "SaveImage")


def deploy_bundle_config(model_ts: Path, config_names: list[str]) -> ConfigParser:
    """``get_bundle_config``: a parser of the archive's ``metadata`` and ``config_names`` extra files."""
    parser = ConfigParser()
    with zipfile.ZipFile(model_ts) as archive:
        names = archive.namelist()

        def read(config: str) -> Any:
            found = [n for n in names if n.endswith(f"/extra/{config}.json")]
            assert found, f"{config}.json not in {names}"
            return json.loads(archive.read(found[0]))

        parser.read_meta(f=read("metadata"))
        content: dict[str, Any] = {}
        for name in config_names:  # ConfigParser.read_config merges a list of files key by key, in order
            content.update(read(name))
        parser.read_config(f=content)
    parser.parse()
    return parser


def filter_compose(compose: Any, disallowed: tuple[str, ...]) -> Any:
    compose.transforms = tuple(t for t in compose.transforms if not any(d in type(t).__name__ for d in disallowed))
    return compose


def deploy_infer(model_ts: Path, image: Any, meta: dict, output_dir: Path, config_names: list[str]) -> dict:
    """One image through the operator's path; returns the post-processed dict."""
    parser = deploy_bundle_config(model_ts, config_names)
    parser["output_dir"] = str(output_dir)  # a Deploy app points its writers at its own output folder
    pre = filter_compose(parser.get_parsed_content("preprocessing"), DISALLOW_LOAD_SAVE)
    post = filter_compose(parser.get_parsed_content("postprocessing"), ("SaveImage",))
    inferer = parser.get_parsed_content("inferer")
    network = torch.jit.load(str(model_ts), map_location="cpu").eval()
    with torch.no_grad():
        inputs = pre({"image": MetaTensor.ensure_torch_and_prune_meta(image, meta)})
        first = inputs["image"]
        outputs = inferer(first[None], network)
        inputs["image"] = first
        return post({"pred": outputs, **inputs})
