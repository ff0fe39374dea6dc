"""BiCodec's decoder and `tartok-tui decode`: committed tokens back into 16 kHz audio, equal to
the reference `BiCodecTokenizer.detokenize` (random weights built with the reference's own
classes), from JSONL or Parquet, local or on S3."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from codec_support import Reference
from output_support import tokens_output
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from tartok_tui.cli import app
from tartok_tui.codec.decoder import load_decoder
from tartok_tui.codec.errors import ModelDirError
from tartok_tui.exit_codes import ExitCode

runner = CliRunner()
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def reference(reference_model_dir: Path) -> Reference:
    return Reference(reference_model_dir)


def tokens(seed: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randint(0, 4096, (1, 32), generator=gen),
        torch.randint(0, 8192, (1, frames), generator=gen),
    )


def test_one_clip_decodes_as_the_reference_detokenizes_it(
    reference_model_dir: Path, reference: Reference
) -> None:
    decoder = load_decoder(reference_model_dir)
    for seed, frames in ((0, 1), (1, 37), (2, 150)):
        g, s = tokens(seed, frames)
        with torch.inference_mode():
            ours = decoder(g, s)[0].numpy()
        theirs = reference.tokenizer.detokenize(g, s)
        assert ours.shape == (frames * 320,) == theirs.reshape(-1).shape
        assert np.abs(ours - theirs).max() < TOLERANCE


def test_a_padded_batch_gives_each_clip_its_own_audio(
    reference_model_dir: Path, reference: Reference
) -> None:
    decoder = load_decoder(reference_model_dir)
    frames = [60, 7, 33]
    clips = [tokens(10 + i, n) for i, n in enumerate(frames)]
    semantic = torch.zeros(3, max(frames), dtype=torch.long)
    for row, (_, s) in zip(semantic, clips, strict=True):
        row[: s.shape[1]] = s[0]
    glob = torch.cat([g for g, _ in clips])
    with torch.inference_mode():
        batched = decoder(glob, semantic, torch.tensor(frames))
    for i, (g, s) in enumerate(clips):
        alone = reference.tokenizer.detokenize(g, s)
        # Equal up to float rounding (other kernels for other shapes), amplified by the
        # random weights' gain; the CPU decodes one clip at a time for this reason.
        assert np.abs(batched[i, : frames[i] * 320].numpy() - alone).max() < TOLERANCE


def test_a_decoder_tensor_missing_from_the_weights_is_named(tmp_path: Path, tiny_model_dir) -> None:
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    path = model / "BiCodec" / "model.safetensors"
    state = load_file(path)
    del state["prenet.vocos_backbone.convnext.0.norm.scale.weight"]
    save_file(state, path)
    with pytest.raises(ModelDirError, match=r"prenet\.vocos_backbone\.convnext\.0\.norm\.scale"):
        load_decoder(model)
    out, _ = tokens_output(tmp_path, {"A.tar": 2}, "jsonl")
    code, text = decode(out, model, tmp_path / "wav", "--count", "1", check=False)
    assert code == ExitCode.BAD_ARGS and "prenet.vocos_backbone.convnext.0.norm.scale" in text
    assert not (tmp_path / "wav").exists()


def decode(out, model, to, *extra: str, check: bool = True) -> tuple[int, str]:
    result = runner.invoke(app, ["decode", str(out), "-m", str(model), "--to", str(to), *extra])
    if check:
        assert result.exit_code == ExitCode.OK, result.output
    return result.exit_code, result.output


def wav(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32")
    assert rate == 16000 and audio.ndim == 1
    return audio


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_decode_writes_the_reference_audio_of_the_keys_asked_for(
    tmp_path: Path, reference_model_dir: Path, reference: Reference, fmt: str
) -> None:
    out, records = tokens_output(tmp_path, {"sub/X.tar": 6, "Y.tar": 4}, fmt, frames=(5, 60))
    keys = ["sub_X_0004", "Y_0001"]
    _, text = decode(out, reference_model_dir, tmp_path / "wav", "--keys", ",".join(keys))
    assert "2 clips" in text
    for key in keys:
        record = records[key]
        expected = reference.tokenizer.detokenize(
            torch.tensor([record["global_tokens"]]), torch.tensor([record["semantic_tokens"]])
        )
        # 16-bit PCM: within half a step of 2**-15 of the reference's float samples.
        assert np.abs(wav(tmp_path / "wav" / f"{key}.wav") - expected).max() < TOLERANCE


def test_a_seeded_draw_repeats_and_missing_keys_or_bad_tokens_exit_1(
    tmp_path: Path, tiny_model_dir
) -> None:
    out, _ = tokens_output(tmp_path, {"A.tar": 8, "B.tar": 8}, "jsonl", frames=(2, 10))
    first, second, third = tmp_path / "1", tmp_path / "2", tmp_path / "3"
    decode(out, tiny_model_dir, first, "--count", "5", "--seed", "3")
    decode(out, tiny_model_dir, second, "--count", "5", "--seed", "3")
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir()) and 1 <= len(names) <= 5
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)
    decode(out, tiny_model_dir, third, "--count", "5", "--seed", "4")
    assert sorted(p.name for p in third.iterdir()) != names  # another seed, another draw
    code, text = decode(out, tiny_model_dir, first, "--keys", "A_0001,nope", check=False)
    assert code == ExitCode.INCOMPLETE and "not in the output: nope" in text
    assert (first / "A_0001.wav").exists()
    # A record whose tokens the decoder cannot take is reported, never decoded into noise.
    path = out / "B.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    bad = json.loads(lines[2])
    bad["global_tokens"] = bad["global_tokens"][:31]
    path.write_text("\n".join([*lines[:2], json.dumps(bad), *lines[3:]]) + "\n", encoding="utf-8")
    code, text = decode(out, tiny_model_dir, third, "--keys", bad["key"], check=False)
    assert code == ExitCode.INCOMPLETE and "31 global tokens, the decoder takes 32" in text
    assert not (third / f"{bad['key']}.wav").exists()
    code, text = decode(out, tiny_model_dir, third, "--keys", "A_0001", "--count", "2", check=False)
    assert code == ExitCode.BAD_ARGS


def test_decode_reads_its_tokens_from_s3(tmp_path: Path, tiny_model_dir, s3) -> None:
    from s3_support import FAST_FAIL, ensure_buckets

    from tartok_tui.storage import filesystem

    out, records = tokens_output(tmp_path, {"A.tar": 3}, "parquet", frames=(2, 10))
    ensure_buckets("tartok-decode")
    fs, _ = filesystem("s3://tartok-decode", FAST_FAIL)
    fs.pipe_file("tartok-decode/out/A.parquet", (out / "A.parquet").read_bytes())
    decode("s3://tartok-decode/out", tiny_model_dir, tmp_path / "wav", "--keys", "A_0002")
    local = tmp_path / "local"
    decode(out, tiny_model_dir, local, "--keys", "A_0002")
    assert (tmp_path / "wav" / "A_0002.wav").read_bytes() == (local / "A_0002.wav").read_bytes()
    assert len(wav(local / "A_0002.wav")) == 320 * len(records["A_0002"]["semantic_tokens"])


def test_decode_writes_to_a_local_folder_only(tmp_path: Path, tiny_model_dir) -> None:
    out, _ = tokens_output(tmp_path, {"A.tar": 2}, "jsonl")
    code, text = decode(out, tiny_model_dir, "s3://bucket/wav", check=False)
    assert code == ExitCode.BAD_ARGS and "decode writes to a local folder" in text
