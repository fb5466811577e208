"""Export a trained net with dynamic batch, height and width, and check it.

Formats: ``onnx`` (the legacy TorchScript-based exporter, run by onnxruntime), ``torchscript``
(``torch.jit.trace``) and ``export`` (``torch.export`` with symbolic sizes, a ``.pt2`` file).
The exported graph returns the main logits only (an auxiliary head is a training device).
After export the saved file is loaded back and run on a random sample of another size than
the traced one, and its output is compared with PyTorch's: the largest absolute difference is
reported, and a large one is an error (a size baked into the graph shows up here).

The data facts a prediction needs (normalisation, palette, class names, channels, ignore
index) are stored in the file (ONNX ``metadata_props`` key ``seglab``, or ``seglab.json``
among a TorchScript / ``.pt2`` file's extra files), so ``predict.py onnx_path=...`` needs
no checkpoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from seglab.checkpoints import load_checkpoint, module_from_checkpoint
from seglab.errors import InputError, MissingFileError, SeglabError
from seglab.module import split_output

log = logging.getLogger(__name__)

# format -> default file name in the run folder
FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt", "export": "model.pt2"}
METADATA_KEY = "seglab"
DATA_FACTS = ("mean", "std", "palette", "class_names", "in_channels", "ignore_index")


class LogitsOnly(nn.Module):
    """The net's main logits as one tensor, whatever the net returns."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return split_output(self.net(x))[0]


def export_onnx(net: nn.Module, sample: torch.Tensor, path: str | Path, opset: int = 17) -> Path:
    """Writes ``net`` (in eval mode, fp32) as ONNX; height, width and batch stay dynamic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = LogitsOnly(net).eval().float()
    with torch.no_grad():
        torch.onnx.export(
            wrapped,
            (sample.float(),),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={
                "image": {0: "batch", 2: "height", 3: "width"},
                "logits": {0: "batch", 2: "height", 3: "width"},
            },
            opset_version=opset,
            dynamo=False,
        )
    return path


def check_onnx(net: nn.Module, path: str | Path, sample: torch.Tensor) -> float:
    """Max absolute difference between onnxruntime's and PyTorch's logits on ``sample``."""
    import onnxruntime as ort  # here: only the ONNX format needs the runtime

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"image": sample.float().numpy()})
    with torch.no_grad():
        torch_out = LogitsOnly(net).eval().float()(sample.float()).numpy()
    return float(np.abs(onnx_out - torch_out).max())


def data_facts(run_cfg: DictConfig | dict) -> dict[str, Any]:
    """What predicting needs from a training run's ``data`` config, as plain JSON values."""
    data = run_cfg["data"]
    facts = {k: data.get(k) for k in DATA_FACTS}
    facts = OmegaConf.to_container(OmegaConf.create(facts), resolve=True)
    facts["num_classes"] = len(facts["class_names"] or []) or data.get("num_classes")
    facts["model"] = str(run_cfg["model"]["net"]["_target_"])
    return facts


def add_onnx_metadata(path: str | Path, facts: dict[str, Any]) -> None:
    """Stores ``facts`` as JSON under the ``seglab`` key of the ONNX file's metadata_props."""
    import onnx  # here: only the ONNX format needs it

    model = onnx.load(str(path))
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(facts))
    onnx.save(model, str(path))


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The data facts ``export`` stored in an ONNX file (clear errors for other files)."""
    import onnx  # here: only the ONNX format needs it

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"ONNX model {path} does not exist; pass onnx_path=<file.onnx>")
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise InputError(
            f"{path} has no seglab metadata (mean, std, palette, ...); export it with "
            "`python src/export.py ckpt_path=<file.ckpt> format=onnx`"
        )
    return json.loads(props[METADATA_KEY])


def _providers() -> list[str]:
    import onnxruntime as ort  # here: only the ONNX format needs the runtime

    available = ort.get_available_providers()
    cuda = torch.cuda.is_available() and "CUDAExecutionProvider" in available
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]


def onnx_predictor(path: str | Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """An onnxruntime session as a tensor -> logits callable (what ``Inferer`` calls)."""
    import onnxruntime as ort  # here: only the ONNX format needs the runtime

    session = ort.InferenceSession(str(path), providers=_providers())

    def predict(x: torch.Tensor) -> torch.Tensor:
        image = np.ascontiguousarray(x.detach().float().cpu().numpy())
        (logits,) = session.run(["logits"], {"image": image})
        return torch.from_numpy(logits).to(x.device)

    return predict


def _loaded(fmt: str, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """The saved file, loaded back the way a user would, as a tensor -> logits callable."""
    if fmt == "onnx":
        return onnx_predictor(path)
    if fmt == "torchscript":
        return torch.jit.load(str(path), map_location="cpu")
    return torch.export.load(str(path)).module()


def _write(
    fmt: str, net: nn.Module, sample: torch.Tensor, path: Path, facts: dict, opset: int
) -> None:
    name = facts["model"].rsplit(".", 1)[-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = LogitsOnly(net).eval()
    extra = {"seglab.json": json.dumps(facts)}
    if fmt == "onnx":
        try:
            export_onnx(net, sample, path, opset)
        except Exception as err:
            raise SeglabError(
                f"ONNX export (opset {opset}) failed for model {name} "
                f"({type(err).__name__}: {str(err)[:500]}); try format=torchscript or export"
            ) from err
        add_onnx_metadata(path, facts)
    elif fmt == "torchscript":
        try:
            with torch.no_grad():
                traced = torch.jit.trace(wrapped, (sample,), check_trace=False)
        except Exception as err:
            raise SeglabError(
                f"torch.jit.trace failed for model {name} ({type(err).__name__}: {err}); "
                "use format=onnx"
            ) from err
        torch.jit.save(traced, str(path), _extra_files=extra)
    else:
        dim = torch.export.Dim.DYNAMIC
        try:
            with torch.no_grad():
                program = torch.export.export(
                    wrapped, (sample,), dynamic_shapes={"x": {0: dim, 2: dim, 3: dim}}
                )
        except Exception as err:
            raise SeglabError(
                f"torch.export failed for model {name} with dynamic batch/height/width "
                f"({type(err).__name__}: {str(err)[:500]}); use format=onnx or torchscript"
            ) from err
        torch.export.save(program, str(path), extra_files=extra)


def _sizes(value: Sequence[int], what: str) -> tuple[int, int, int]:
    sizes = tuple(int(v) for v in value)
    if len(sizes) != 3 or min(sizes) < 1:
        raise InputError(f"{what} must be [batch, height, width], got {list(value)}")
    return sizes  # type: ignore[return-value]


def export(cfg: DictConfig) -> dict[str, Any]:
    """Exports ``cfg.ckpt_path``'s net to ``cfg.format``, checks the saved file against
    PyTorch on a random ``cfg.check_size`` sample, and writes ``export.json`` to the run
    folder; returns ``{path, format, max_abs_diff}``."""
    fmt = str(cfg.get("format") or "onnx")
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    sample_size = _sizes(cfg.get("sample_size", (2, 64, 64)), "sample_size")
    check_size = _sizes(cfg.get("check_size", (2, 97, 131)), "check_size")
    if fmt == "export" and sample_size[0] == 1:
        raise InputError("format=export needs sample_size with batch > 1 (1 is specialised)")
    module, run = module_from_checkpoint(load_checkpoint(cfg.ckpt_path), path=cfg.ckpt_path)
    net = module.net.float().eval()
    facts = data_facts(run)
    channels = int(facts["in_channels"])
    out_dir = Path(cfg.paths.output_dir)
    path = Path(cfg.output) if cfg.get("output") else out_dir / FORMATS[fmt]

    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(sample_size[0], channels, *sample_size[1:], generator=gen)
    _write(fmt, net, sample, path, facts, int(cfg.get("opset", 17)))
    log.info("exported %s to %s", facts["model"].rsplit(".", 1)[-1], path)

    x = torch.randn(check_size[0], channels, *check_size[1:], generator=gen)
    with torch.no_grad():
        expected = LogitsOnly(net).eval()(x)
        try:
            got = _loaded(fmt, path)(x)
        except Exception as err:
            raise InputError(
                f"the exported {fmt} model {path} fails on a {list(x.shape)} input (traced "
                f"on {list(sample.shape)}): {type(err).__name__}: {str(err)[:500]}\n"
                "The saved file only accepts some sizes (for format=export: the shape "
                "guards above, e.g. sizes divisible by the net's stride). Use format=onnx "
                "for any size, or check_size=[batch,height,width] at a size it must accept."
            ) from err
    if got.shape != expected.shape:
        raise InputError(
            f"the exported {fmt} model {path} gives logits of shape {list(got.shape)} for a "
            f"{list(x.shape)} input, PyTorch {list(expected.shape)}: a size is baked in"
        )
    diff = float((got.float() - expected.float()).abs().max())
    tolerance = float(cfg.get("tolerance", 1e-3))
    log.info("%s: max abs difference from PyTorch on %s: %.3g", path, list(x.shape), diff)
    if not diff <= tolerance:  # also catches NaN
        raise InputError(
            f"the exported {fmt} model {path} differs from PyTorch by up to {diff:.3g} on a "
            f"{list(x.shape)} input (tolerance {tolerance:g})"
        )
    result = {"path": str(path), "format": fmt, "max_abs_diff": diff}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "export.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
