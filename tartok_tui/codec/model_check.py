"""Check a model dir's tensors (names and shapes) before any worker starts, without torch.

    check_model_dir(path)   ModelDirError naming the file and the key, or None

The configs say which tensors the tokenizer reads and their shapes (codec/shapes.py); the
safetensors headers say what the files hold, and are read here. A `pytorch_model.bin` is a
pickle that only torch reads safely: its names and shapes are listed by one short-lived
subprocess (`python -m tartok_tui.codec.model_check FILE`), so the caller never imports torch.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

from tartok_tui.codec.model_dir import (
    BICODEC_DIR,
    OPTIONAL_BICODEC_KEYS,
    UNUSED_BICODEC_PREFIXES,
    ModelDirError,
    check_configs,
    check_shapes,
    read_config,
    read_wav2vec2_settings,
    wav2vec2_entries,
    wav2vec2_unused,
    wav2vec2_weights,
)
from tartok_tui.codec.shapes import Shape, Shapes, bicodec_shapes, wav2vec2_shapes

WAV2VEC2_LAYERS = 16
"""Hidden state 16 is the deepest the tokenizer reads (wav2vec.SemanticFeatures.LAYERS)."""
LIST_TIMEOUT_S = 300.0
"""For the subprocess that lists a .bin: torch's import plus the pickle of 1.2 GB mapped."""

_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}  # fmt: skip
_WEIGHT_NORM = (
    (".weight_g", ".weight_v"),
    (".parametrizations.weight.original0", ".parametrizations.weight.original1"),
)


def check_model_dir(path: str | Path) -> None:
    """Raise ModelDirError (file and key) unless every file is present and every tensor
    the tokenizer reads is there with the shape its config implies, and nothing else is."""
    cfg = read_config(Path(path))
    settings = read_wav2vec2_settings(cfg, WAV2VEC2_LAYERS)
    check_configs(cfg, settings)
    bicodec_file = cfg.root / BICODEC_DIR / "model.safetensors"
    try:
        expected = bicodec_shapes(cfg.audio_tokenizer)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelDirError(
            f"unusable audio_tokenizer section: {exc!r}", cfg.root / BICODEC_DIR / "config.yaml"
        ) from exc
    actual = fold_weight_norm_shapes(safetensors_shapes(bicodec_file), bicodec_file)
    check_shapes(
        expected,
        actual,
        bicodec_file,
        unused_prefixes=UNUSED_BICODEC_PREFIXES,
        optional=OPTIONAL_BICODEC_KEYS,
    )

    weights = wav2vec2_weights(cfg)
    raw = (
        safetensors_shapes(weights) if weights.suffix == ".safetensors" else pickled_shapes(weights)
    )
    ours = wav2vec2_entries(raw, WAV2VEC2_LAYERS)
    check_shapes(
        wav2vec2_shapes(settings, WAV2VEC2_LAYERS),
        fold_weight_norm_shapes(ours, weights),
        weights,
        unused_prefixes=wav2vec2_unused(settings, WAV2VEC2_LAYERS),
    )


def safetensors_shapes(path: Path) -> Shapes:
    """Tensor name -> shape from a safetensors header; ModelDirError for a file that is not
    one, or is shorter than its header says (a truncated download)."""
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            head = f.read(8)
            if len(head) < 8:
                raise ModelDirError(f"truncated: {size} bytes, no safetensors header", path)
            (header_len,) = struct.unpack("<Q", head)
            if 8 + header_len > size:
                raise ModelDirError(
                    f"truncated: the header needs {8 + header_len} bytes, the file has {size}",
                    path,
                )
            header = json.loads(f.read(header_len))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"cannot read the safetensors header: {exc}", path) from exc
    if not isinstance(header, dict):
        raise ModelDirError("cannot read the safetensors header: not a JSON object", path)
    data_size = size - 8 - header_len
    shapes: Shapes = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            shape = tuple(int(n) for n in info["shape"])
            begin, end = (int(n) for n in info["data_offsets"])
            nbytes = math.prod(shape) * _DTYPE_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelDirError(f"bad header entry: {exc!r}", path, key) from exc
        if end - begin != nbytes:
            raise ModelDirError(f"{end - begin} bytes of data for a {shape} tensor", path, key)
        if end > data_size:
            raise ModelDirError(
                f"truncated: the tensor's data ends at byte {8 + header_len + end}, "
                f"the file has {size}",
                path,
                key,
            )
        shapes[key] = shape
    return shapes


def pickled_shapes(path: Path) -> Shapes:
    """Tensor name -> shape of a torch pickle, listed by a subprocess (torch stays out of
    this process); ModelDirError when torch cannot read it."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tartok_tui.codec.model_check", str(path)],
            capture_output=True,
            text=True,
            timeout=LIST_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelDirError(f"cannot list the tensors: {exc}", path) from exc
    lines = proc.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        answer = {}
    if proc.returncode != 0 or "shapes" not in answer:
        why = answer.get("error") or proc.stderr.strip()[-500:] or f"exit {proc.returncode}"
        raise ModelDirError(f"cannot read weights: {why}", path)
    return {k: tuple(v) for k, v in answer["shapes"].items()}


def fold_weight_norm_shapes(shapes: Shapes, file: Path) -> Shapes:
    """`X.weight_g` + `X.weight_v` (or the parametrized names) -> `X.weight` with v's shape;
    ModelDirError for a half pair or a magnitude that does not fit its direction."""
    out: Shapes = {}
    consumed: set[str] = set()
    for key, shape in shapes.items():
        for g_suffix, v_suffix in _WEIGHT_NORM:
            if not key.endswith(g_suffix):
                continue
            base = key[: -len(g_suffix)]
            v_shape = shapes.get(base + v_suffix)
            if v_shape is None:
                raise ModelDirError("weight-norm magnitude without direction", file, key)
            if not _magnitude_fits(shape, v_shape):
                raise ModelDirError(
                    f"weight-norm magnitude {shape} does not fit direction {v_shape}", file, key
                )
            out[base + ".weight"] = v_shape
            consumed.update((key, base + v_suffix))
    for key, shape in shapes.items():
        if key in consumed:
            continue
        if key.endswith(tuple(v for _, v in _WEIGHT_NORM)):
            raise ModelDirError("weight-norm direction without magnitude", file, key)
        out[key] = shape
    return out


def _magnitude_fits(g: Shape, v: Shape) -> bool:
    return len(g) == len(v) and all(a in (1, b) for a, b in zip(g, v, strict=True))


def _list_pickle(path: str) -> int:
    """The subprocess's side: print {"shapes": {name: shape}} or {"error": why}."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # a corrupt file fails in many ways; all mean "unreadable"
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        print(json.dumps({"error": "not a dict of tensors"}))
        return 1
    print(json.dumps({"shapes": {k: list(v.shape) for k, v in state.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(_list_pickle(sys.argv[1]))
