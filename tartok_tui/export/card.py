"""The dataset card (``README.md``) of a Hugging Face export: a YAML header the Hub and
``datasets`` read (configs, features, split sizes), then what the tokens are and how they
were made (codec, the run manifest's fingerprint and weights, the tool's version).

Built from the unit records alone, so it is the same bytes whenever the same output is
exported (no dates).
"""

from __future__ import annotations

from collections import Counter
from pathlib import PurePosixPath

import pyarrow as pa
import yaml

from tartok_tui import __version__
from tartok_tui.codec.fields import CODEC, FRAME_RATE, TOKEN_FIELDS, TokenField
from tartok_tui.export.records import ExportTotals, Settings
from tartok_tui.formatting import audio_amount
from tartok_tui.output.manifest import Manifest

SPLIT = "train"
ALL_CONFIG = "all"


def _feature(field: pa.Field) -> dict[str, str]:
    """A column in the Hub's YAML spelling of ``datasets`` features."""
    if pa.types.is_list(field.type):
        return {"name": field.name, "list": str(field.type.value_type)}
    return {
        "name": field.name,
        "dtype": "string" if pa.types.is_string(field.type) else str(field.type),
    }


def _per_language(totals: ExportTotals, data_dir: PurePosixPath) -> tuple[Counter, Counter]:
    """(samples, bytes) per language folder of a split export."""
    samples: Counter[str] = Counter()
    size: Counter[str] = Counter()
    for _, record in totals.units:
        samples.update(record.languages)
        for key, n in record.files.items():
            parts = PurePosixPath(key).parts
            if len(parts) > 2 and parts[0] == data_dir.name:
                size[parts[1]] += n
    return samples, size


def _header(
    totals: ExportTotals, settings: Settings, schema: pa.Schema, data_dir: PurePosixPath
) -> dict:
    def features() -> list[dict[str, str]]:
        return [_feature(f) for f in schema]  # a list per config: YAML anchors read badly

    configs = [
        {
            "config_name": ALL_CONFIG,
            "default": True,
            "data_files": [{"split": SPLIT, "path": f"{data_dir}/**/*.parquet"}],
        }
    ]
    info = [
        {
            "config_name": ALL_CONFIG,
            "features": features(),
            "splits": [{"name": SPLIT, "num_examples": totals.samples}],
            "download_size": totals.bytes,
        }
    ]
    if settings.split_by == "language":
        samples, size = _per_language(totals, data_dir)
        for language in sorted(samples):
            configs.append(
                {
                    "config_name": language,
                    "data_files": [{"split": SPLIT, "path": f"{data_dir}/{language}/**/*.parquet"}],
                }
            )
            info.append(
                {
                    "config_name": language,
                    "features": features(),
                    "splits": [{"name": SPLIT, "num_examples": samples[language]}],
                    "download_size": size[language],
                }
            )
    return {
        "configs": configs,
        "dataset_info": info,
        "tags": ["audio-tokens", CODEC, "spark-tts", "tartok-tui"],
    }


def _describe(field: TokenField) -> str:
    count = f"{field.per_clip} per clip" if field.per_clip else f"{FRAME_RATE} per second of audio"
    return f"`{field.name}`: {count}, integers in [0, {field.codes}), `list<uint16>`"


def _made_with(manifest: Manifest | None) -> list[str]:
    if manifest is None:
        return ["The output had no run manifest (written before manifests existed): the model "
                "and precision that made these tokens are not recorded."]  # fmt: skip
    rows = [
        ("codec", f"{manifest.codec} (tokens version {manifest.tokens_version})"),
        ("model weights", f"`{manifest.weights}`"),
        ("precision", manifest.precision),
        ("tokens fingerprint", f"`{manifest.fingerprint}`"),
        ("tokenized by", f"tartok-tui {manifest.tool_version}"),
    ]
    rows += [(f"weights file `{name}`", f"sha256 `{digest}`")
             for name, digest in sorted(manifest.weight_files.items())]  # fmt: skip
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def dataset_card(
    totals: ExportTotals,
    settings: Settings,
    manifest: Manifest | None,
    data_dir: PurePosixPath,
    schema: pa.Schema,
    metadata_column: str,
) -> str:
    header = yaml.safe_dump(_header(totals, settings, schema, data_dir), sort_keys=False)
    semantic = sum(totals.tokens[f.name] for f in TOKEN_FIELDS if f.per_clip is None)
    audio = audio_amount(semantic / FRAME_RATE)
    languages = " · ".join(f"{k}: {n:,}" for k, n in sorted(totals.languages.items()))
    lines = [
        "---",
        header.rstrip("\n"),
        "---",
        "",
        f"# Speech as {CODEC} tokens",
        "",
        f"Speech tokenized into the audio tokens of Spark-TTS's BiCodec tokenizer, exported by "
        f"tartok-tui {__version__}.",
        "",
        "| | |",
        "|---|---|",
        f"| samples | {totals.samples:,} from {len(totals.units):,} tokens files |",
        f"| audio | about {audio} ({FRAME_RATE} semantic tokens a second) |",
        *(f"| {f.name} | {totals.tokens[f.name]:,} |" for f in TOKEN_FIELDS),
        f"| languages | {languages or 'none'} |",
        f"| Parquet | {totals.bytes:,} bytes |",
        "",
        "## Columns",
        "",
        "- `key`: the sample's key in its source tar",
        "- `language`, `text`: from the sample's metadata",
        *(f"- {_describe(f)}" for f in TOKEN_FIELDS),
        f"- `{metadata_column}`: the sample's other metadata fields, as JSON text",
        "",
        "## How the tokens were made",
        "",
        *_made_with(manifest),
        "",
        "## Use",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("path/to/this/folder", split="{SPLIT}")',
    ]
    if settings.split_by == "language":
        lines.append(
            f'en = load_dataset("path/to/this/folder", "en", split="{SPLIT}")   # one language'
        )
    lines += [
        "```",
        "",
        "`tartok-tui decode` on the tokens output these shards were exported from turns "
        "samples back into audio with BiCodec's own decoder.",
        "",
    ]
    return "\n".join(lines)
