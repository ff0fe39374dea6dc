"""The pre-run model check: tensor names and shapes against the configs, without torch in the
calling process; a truncated, renamed, reshaped, missing or unexpected tensor is named."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tartok_tui.codec.model_check import WAV2VEC2_LAYERS, check_model_dir
from tartok_tui.codec.model_dir import ModelDirError, Wav2Vec2Settings
from tartok_tui.codec.random_model import FULL_AUDIO_TOKENIZER, FULL_WAV2VEC2, _tiny_configs
from tartok_tui.codec.shapes import bicodec_shapes, wav2vec2_shapes
from tartok_tui.codec.tokenizer import BiCodecModel, BiCodecTokenizer
from tartok_tui.codec.wav2vec import SemanticFeatures

BICODEC = "BiCodec/model.safetensors"
W2V_BIN = "wav2vec2-large-xlsr-53/pytorch_model.bin"


def _settings(raw: dict) -> Wav2Vec2Settings:
    return Wav2Vec2Settings.from_dict(raw, Path("config.json"))


# -- the expected shapes are the modules' own ---------------------------------------------------


@pytest.mark.parametrize("preset", ["tiny", "full"])
def test_shapes_from_the_configs_are_the_modules_state_dicts(preset: str) -> None:
    section, w2v = (FULL_AUDIO_TOKENIZER, FULL_WAV2VEC2) if preset == "full" else _tiny_configs()
    module = BiCodecModel(section).state_dict()
    assert bicodec_shapes(section) == {k: tuple(v.shape) for k, v in module.items()}
    for variant in (w2v, {**w2v, "conv_bias": False}, {**w2v, "num_hidden_layers": 16}):
        settings = _settings(variant)
        with torch.device("meta"):
            features = SemanticFeatures(settings).state_dict()
        assert wav2vec2_shapes(settings, WAV2VEC2_LAYERS) == {
            k: tuple(v.shape) for k, v in features.items()
        }
    assert max(SemanticFeatures.LAYERS) == WAV2VEC2_LAYERS


# -- good model dirs pass ----------------------------------------------------------------------


def test_the_random_and_the_reference_built_model_dirs_pass(
    tiny_model_dir: Path, reference_model_dir: Path
) -> None:
    check_model_dir(tiny_model_dir)
    check_model_dir(reference_model_dir)  # the official layout, decoder tensors and all


def test_wav2vec2_weights_as_safetensors_pass(tiny_model_dir: Path, tmp_path: Path) -> None:
    root = _copy(tiny_model_dir, tmp_path)
    state = torch.load(root / W2V_BIN, weights_only=True)
    (root / W2V_BIN).unlink()
    save_file(
        {k: v.contiguous() for k, v in state.items()},
        root / W2V_BIN.replace("pytorch_model.bin", "model.safetensors"),
    )
    check_model_dir(root)


def test_the_check_never_imports_torch_in_the_calling_process(tiny_model_dir: Path) -> None:
    code = (
        "import sys\n"
        "from tartok_tui.codec.model_check import check_model_dir\n"
        f"check_model_dir({str(tiny_model_dir)!r})\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# -- bad model dirs are named -------------------------------------------------------------------


def _copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / "model"))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])


def _edit_bicodec(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        state = load_file(root / BICODEC)
        edit(state)
        save_file(state, root / BICODEC)

    return apply


def _edit_wav2vec2(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        state = torch.load(root / W2V_BIN, weights_only=True)
        edit(state)
        torch.save(state, root / W2V_BIN)

    return apply


def _rename(old: str, new: str) -> Callable[[dict], None]:
    return lambda s: s.update({new: s.pop(old)})


BAD_DIRS = {
    "bicodec-truncated": (lambda root: _truncate(root / BICODEC), BICODEC, None),
    "bicodec-renamed": (
        _edit_bicodec(_rename("encoder.project.weight", "encoder.projection.weight")),
        BICODEC,
        "encoder.project.weight",
    ),
    "bicodec-reshaped": (
        _edit_bicodec(lambda s: s.update({"quantizer.codebook.weight": torch.zeros(8192, 9)})),
        BICODEC,
        "quantizer.codebook.weight",
    ),
    "bicodec-missing": (
        _edit_bicodec(lambda s: s.pop("speaker_encoder.quantizer.project_in.bias")),
        BICODEC,
        "speaker_encoder.quantizer.project_in.bias",
    ),
    "bicodec-unexpected": (
        _edit_bicodec(lambda s: s.update({"encoder.extra.weight": torch.zeros(3)})),
        BICODEC,
        "encoder.extra.weight",
    ),
    "bicodec-half-weight-norm": (
        _edit_bicodec(lambda s: s.pop("quantizer.in_project.weight_g")),
        BICODEC,
        "quantizer.in_project.weight_v",
    ),
    "wav2vec2-truncated": (lambda root: _truncate(root / W2V_BIN), W2V_BIN, None),
    "wav2vec2-renamed": (
        _edit_wav2vec2(
            _rename(
                "wav2vec2.encoder.layers.3.attention.k_proj.weight",
                "wav2vec2.encoder.layers.3.attention.key.weight",
            )
        ),
        W2V_BIN,
        "encoder.layers.3.attention.k_proj.weight",
    ),
    "wav2vec2-reshaped": (
        _edit_wav2vec2(
            lambda s: s.update({"wav2vec2.feature_projection.projection.bias": torch.zeros(5)})
        ),
        W2V_BIN,
        "feature_projection.projection.bias",
    ),
    "wav2vec2-missing": (
        _edit_wav2vec2(lambda s: s.pop("wav2vec2.encoder.layers.15.final_layer_norm.weight")),
        W2V_BIN,
        "encoder.layers.15.final_layer_norm.weight",
    ),
    "wav2vec2-unexpected": (
        _edit_wav2vec2(lambda s: s.update({"wav2vec2.encoder.bogus": torch.zeros(2)})),
        W2V_BIN,
        "encoder.bogus",
    ),
}


@pytest.mark.parametrize("case", list(BAD_DIRS))
def test_a_bad_tensor_file_is_refused_naming_the_file_and_the_key(
    tiny_model_dir: Path, tmp_path: Path, case: str
) -> None:
    edit, file, key = BAD_DIRS[case]
    root = _copy(tiny_model_dir, tmp_path)
    edit(root)
    with pytest.raises(ModelDirError) as err:
        check_model_dir(root)
    assert err.value.file == str(root / file), str(err.value)
    if key is not None:
        assert err.value.key == key, str(err.value)
    else:
        assert "truncated" in str(err.value) or "cannot read weights" in str(err.value)
    # Loading the model refuses it too, naming the same file.
    with pytest.raises(ModelDirError) as load_err:
        BiCodecTokenizer.load(root)
    assert load_err.value.file == str(root / file)


def test_a_renamed_tensor_is_reported_with_the_name_found_instead(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    root = _copy(tiny_model_dir, tmp_path)
    BAD_DIRS["bicodec-renamed"][0](root)
    with pytest.raises(ModelDirError, match=r"unexpected 'encoder\.projection\.weight'"):
        check_model_dir(root)


def test_a_missing_weights_file_and_a_bad_config_are_refused(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    root = _copy(tiny_model_dir, tmp_path)
    (root / W2V_BIN).unlink()
    with pytest.raises(ModelDirError, match="file is missing"):
        check_model_dir(root)
    root = _copy(tiny_model_dir, tmp_path / "second")
    config = root / "wav2vec2-large-xlsr-53" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "hidden_size": 48}))
    with pytest.raises(ModelDirError) as err:
        check_model_dir(root)
    assert err.value.key == "audio_tokenizer.encoder.input_channels"


@pytest.mark.parametrize("case", ["bicodec-truncated", "bicodec-renamed", "wav2vec2-reshaped"])
def test_run_refuses_a_bad_model_before_any_worker_starts(
    tiny_model_dir: Path, tmp_path: Path, case: str
) -> None:
    from typer.testing import CliRunner

    from tartok_tui import cli
    from tartok_tui import run as pipeline
    from tartok_tui.demo.data import write_emilia_tar
    from tartok_tui.exit_codes import ExitCode

    edit, file, key = BAD_DIRS[case]
    root = _copy(tiny_model_dir, tmp_path)
    edit(root)
    write_emilia_tar(tmp_path / "in" / "EN-B000000.tar", 1, seed=0, min_s=0.5, max_s=0.6)
    started: list = []
    original = pipeline.make_supervisor
    pipeline.make_supervisor = lambda *a: started.append(a)  # type: ignore[assignment]
    try:
        result = CliRunner().invoke(
            cli.app,
            ["run", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(root),
             "--device", "cpu", "--no-tui"],
            env={"COLUMNS": "400"},
        )  # fmt: skip
    finally:
        pipeline.make_supervisor = original  # type: ignore[assignment]
    assert result.exit_code == ExitCode.BAD_ARGS, result.output
    assert started == []
    text = " ".join(result.output.split())
    assert "model dir:" in text and file in text
    if key is not None:
        assert key in text
