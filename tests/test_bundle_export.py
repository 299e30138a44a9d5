"""Export of every bundle's model: TorchScript through MONAI's ``ckpt_export`` (the README command), ONNX.

- every network of ``networks.py`` scripts with ``torch.jit.script``;
- per bundle (tiny model): the README's ``ckpt_export`` command writes ``models/model.ts`` with
  ``metadata.json``, ``inference.json`` and ``model_info.json`` as extra files; ``network_def``
  builds with no ``model.pt`` present;
- ``model.ts`` runs in a subprocess where ``monai_adaloss`` cannot be imported, equal to the eager
  model within 1e-5;
- ``monai-adaloss export --onnx``: opset >= 17, dynamic batch, onnxruntime within 1e-4 of eager.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from bundle_export_checks import TINY, make_bundle_model, readme_command, run
from monai.bundle import ConfigParser

from monai_adaloss import networks
from monai_adaloss.export import MODEL_INFO_KEY, export_onnx, input_channels, read_onnx_model_info
from monai_adaloss.inference import build_network, load_checkpoint
from monai_adaloss.model_info import LandmarkModelInfo

BUNDLES = sorted(TINY)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize(
    "make",
    [
        lambda: networks.catheter_unet(channels=(4, 8, 16)),
        lambda: networks.endoscopy_unet(channels=(4, 8, 16)),
        lambda: networks.face_dense_unet(out_channels=5, init_channels=4, growth_rate=4),
        lambda: networks.HeatmapUNet(3, 1, 3, channels=(4, 8)),
        lambda: networks.HeatmapUNet(1, 2, 3, channels=(4, 8, 16), norm="instance"),
        lambda: networks.DenseHeatmapUNet(3, 1, 2, block_layers=(1, 2), init_channels=4, growth_rate=2, kernel_size=3),
    ],
)
def test_every_network_scripts_and_keeps_its_outputs(make: Any) -> None:
    torch.manual_seed(0)
    network = make().eval()
    scripted = torch.jit.script(network)
    shape = (2, input_channels(network)) + (16,) * network.spatial_dims
    x = torch.rand(shape)
    with torch.no_grad():
        assert torch.allclose(scripted(x), network(x), atol=1e-6)
    with pytest.raises(torch.jit.Error, match="must be divisible"):
        scripted(torch.rand(shape[:2] + (15,) * network.spatial_dims))


@pytest.fixture(scope="module", params=BUNDLES)
def exported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, preloaded_python: dict[str, str]
) -> dict[str, Any]:
    """A tiny model of the bundle, exported with the README's ckpt_export command."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    info = make_bundle_model(name, root)
    argv = readme_command(root / "docs" / "README.md", "ckpt_export")
    result = run(argv, cwd=root, preloaded=preloaded_python)
    return {"name": name, "root": root, "info": info, "argv": argv, "result": result}


def test_ckpt_export_readme_command_writes_model_ts_with_model_info(exported: dict[str, Any]) -> None:
    result, root = exported["result"], exported["root"]
    assert result.returncode == 0, result.stderr[-3000:]
    archive = root / "models" / "model.ts"
    with zipfile.ZipFile(archive) as zipped:
        extra = {Path(n).name: zipped.read(n) for n in zipped.namelist() if "/extra/" in n}
    assert {"metadata.json", "inference.json", "model_info.json"} <= set(extra)
    carried = json.loads(json.loads(extra["model_info.json"])[MODEL_INFO_KEY])
    assert carried == json.loads(json.dumps(exported["info"]))
    assert json.loads(extra["metadata.json"])["version"]  # MONAI's _meta_ block
    assert "postprocessing" in json.loads(extra["inference.json"])


def test_network_def_builds_without_any_model_file(exported: dict[str, Any], tmp_path: Path) -> None:
    """No model.pt, model.ts or model_info.json: network_def is the default network of train.json."""
    parser = ConfigParser()
    parser.read_config(str(exported["root"] / "configs" / "inference.json"))
    bare = tmp_path / "bundle"
    (bare / "configs").mkdir(parents=True)
    (bare / "configs" / "train.json").write_bytes((exported["root"] / "configs" / "train.json").read_bytes())
    parser["bundle_root"] = str(bare)
    network = parser.get_parsed_content("network_def")
    assert isinstance(network, torch.nn.Module)
    # with the sidecar only (no checkpoint read): the trained architecture
    (bare / "models").mkdir()
    (bare / "models" / "model_info.json").write_bytes((exported["root"] / "models" / "model_info.json").read_bytes())
    parser = ConfigParser()
    parser.read_config(str(exported["root"] / "configs" / "inference.json"))
    parser["bundle_root"] = str(bare)
    state = torch.load(exported["root"] / "models" / "model.pt", weights_only=True)["model"]
    parser.get_parsed_content("network_def").load_state_dict(state)


_NO_MONAI_ADALOSS = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'monai_adaloss':
            raise ImportError('monai_adaloss is blocked in this process')
sys.meta_path.insert(0, Block())
import torch
try:
    import monai_adaloss
    raise SystemExit('monai_adaloss imported')
except ImportError:
    pass
files = {'model_info.json': ''}
net = torch.jit.load(sys.argv[1], map_location='cpu', _extra_files=files).eval()
assert files['model_info.json'], 'no model_info.json'
x = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(net(x), sys.argv[3])
print('ran without monai_adaloss:', 'monai_adaloss' not in sys.modules)
"""


def _eager(root: Path) -> tuple[torch.nn.Module, LandmarkModelInfo]:
    model = load_checkpoint(root / "models" / "model.pt")
    return model.network.eval(), model.info


def _example(network: torch.nn.Module, info: LandmarkModelInfo, batch: int = 3) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(batch, input_channels(network), *info.input_size)


def test_model_ts_runs_without_monai_adaloss_like_eager(exported: dict[str, Any], tmp_path: Path) -> None:
    assert exported["result"].returncode == 0, exported["result"].stderr[-3000:]
    network, info = _eager(exported["root"])
    x = _example(network, info)
    torch.save(x, tmp_path / "x.pt")
    script = tmp_path / "run_ts.py"
    script.write_text(_NO_MONAI_ADALOSS)
    result = run(
        [sys.executable, "-I", str(script), str(exported["root"] / "models" / "model.ts"), str(tmp_path / "x.pt"),
         str(tmp_path / "y.pt")],
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ran without monai_adaloss: True" in result.stdout
    with torch.no_grad():
        expected = network(x)
    difference = (torch.load(tmp_path / "y.pt") - expected).abs().max().item()
    assert difference <= 1e-5, difference


def test_onnx_export_matches_eager_under_onnxruntime(exported: dict[str, Any], tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    network, info = _eager(exported["root"])
    path = export_onnx(network, tmp_path / "model.onnx", info.state_dict(), input_channels(network))
    proto = onnx.load(str(path))
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 17
    assert read_onnx_model_info(path) == json.loads(json.dumps(info.state_dict()))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # dynamic batch
        x = _example(network, info, batch)
        with torch.no_grad():
            expected = network(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == expected.shape
        assert abs(got - expected).max() <= 1e-4


def test_build_network_still_refuses_code_in_the_model_info(exported: dict[str, Any]) -> None:
    info = LandmarkModelInfo.from_state_dict({**exported["info"], "network": {"_target_": "os.system"}})
    with pytest.raises(Exception, match="may only name"):
        build_network(info)
