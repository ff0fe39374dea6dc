"""``--format spark-tts``: one training line per sample in the text layout Spark-TTS's LLM
reads.

The prompt is the official one (``process_prompt`` in Spark-TTS's ``cli/SparkTTS.py``, for
text-to-speech without a reference clip): the task token, the text between the content
tags, the 32 global tokens between theirs. A training line continues it with what the LLM
learns to generate: the semantic tokens between their tags, then the end of the sequence.

    <|task_tts|><|start_content|>TEXT<|end_content|>
    <|start_global_token|><|bicodec_global_G1|>...<|end_global_token|>
    <|start_semantic_token|><|bicodec_semantic_S1|>...<|end_semantic_token|><|im_end|>

(one line, no spaces). ``DEST/sub/X.jsonl`` holds one JSON object per sample, ``{"key",
"text"}``, ``text`` being that line (JSON keeps a transcript's own newlines out of the
layout); ``load_dataset("json", data_files="DEST/**/*.jsonl")`` reads it. A sample without
text teaches nothing: it is skipped and counted.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import PurePosixPath

from tartok_tui.codec.fields import CODEC, GLOBAL, SEMANTIC, TokenField
from tartok_tui.export.destination import Destination
from tartok_tui.export.records import ExportTotals, Settings
from tartok_tui.export.unit import Parts
from tartok_tui.output.manifest import Manifest
from tartok_tui.output.parquet import as_text
from tartok_tui.output.samples import Sample
from tartok_tui.output.target import PartialFile

TASK_TTS = "<|task_tts|>"
START_CONTENT, END_CONTENT = "<|start_content|>", "<|end_content|>"
START_GLOBAL, END_GLOBAL = "<|start_global_token|>", "<|end_global_token|>"
START_SEMANTIC, END_SEMANTIC = "<|start_semantic_token|>", "<|end_semantic_token|>"
END_OF_SEQUENCE = "<|im_end|>"


@functools.cache
def _spellings(field: TokenField) -> list[str]:
    return [f"<|{CODEC}_{field.stream}_{t}|>" for t in range(field.codes)]


def token_text(field: TokenField, tokens: Sequence[int]) -> str:
    """``<|bicodec_semantic_17|>...``: each token as the LLM's vocabulary spells it
    (ValueError for a token the vocabulary does not have)."""
    try:
        return "".join(map(_spellings(field).__getitem__, tokens))
    except IndexError:
        raise ValueError(f"a {field.name} token past the codebook's {field.codes}") from None


def prompt(text: str, global_tokens: Sequence[int]) -> str:
    """The official text-to-speech prompt: what the LLM is given at inference."""
    return "".join(
        [
            TASK_TTS,
            START_CONTENT,
            text,
            END_CONTENT,
            START_GLOBAL,
            token_text(GLOBAL, global_tokens),
            END_GLOBAL,
        ]
    )


def training_line(text: str, global_tokens: Sequence[int], semantic_tokens: Sequence[int]) -> str:
    """The prompt, then the semantic tokens the LLM learns to produce, then the end."""
    semantic = token_text(SEMANTIC, semantic_tokens)
    return f"{prompt(text, global_tokens)}{START_SEMANTIC}{semantic}{END_SEMANTIC}{END_OF_SEQUENCE}"


class SparkTtsUnit:
    def __init__(self, stem: PurePosixPath, dest: Destination) -> None:
        self.key = stem.with_name(stem.name + ".jsonl")
        self.parts = Parts(dest)

    def add(self, sample: Sample) -> bool:
        text = as_text(sample.text)
        if not text:
            return False
        line = training_line(text, sample.tokens[GLOBAL.name], sample.tokens[SEMANTIC.name])
        record = json.dumps({"key": sample.key, "text": line}, ensure_ascii=False) + "\n"
        self.parts.get(self.key).write(record.encode("utf-8"))
        return True

    def finish(self) -> list[PartialFile]:
        return self.parts.in_order()

    def abort(self) -> None:
        self.parts.abort()


class SparkTtsFormat:
    name = "spark-tts"

    def unit(self, stem: PurePosixPath, dest: Destination) -> SparkTtsUnit:
        return SparkTtsUnit(stem, dest)

    def finish(
        self, dest: Destination, totals: ExportTotals, settings: Settings, manifest: Manifest | None
    ) -> None:
        """Nothing beyond the lines: each file is whole once its unit is recorded."""
