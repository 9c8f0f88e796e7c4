"""Where the pre-flight check's inputs come from: the hub, through the kit's own paths (what a user with a GPU and
an internet connection has), or a folder for a machine without internet (`--data`)."""

from dataclasses import dataclass
from pathlib import Path

from formats.packed_data import FINEWEB_EDU

GPT2_TOKENIZER = "openai-community/gpt2"
FINEWEB_SLICE = "sample/10BT/000_00000.parquet"  # the first file of sample-10BT
FOLDER_NEEDS = ("gpt2.tiktoken (GPT-2's BPE ranks)", "one *.jsonl in HellaSwag's schema",
                "*.txt files, in it or below it (the text the recipe trains on)")


class SourcesError(Exception):
    """A --data folder that lacks what the check needs: said on one line before any stage runs."""


@dataclass(frozen=True)
class Sources:
    tokenizer: str  # a hub id or a .tiktoken file (preparation.tokenizer.tokenizer_from_source takes both)
    hellaswag: str | None  # a HellaSwag-schema JSONL; None: HellaSwag's validation split from the hub
    prepare_flags: tuple  # prepare_data.py's source flags for the recipe's data
    description: str

    @property
    def folder(self) -> str | None:
        """What a stage's process is told (`--data`), None for the hub."""
        return None if self.hellaswag is None else str(Path(self.tokenizer).parent)


def hub_sources() -> Sources:
    """GPT-2's tokenizer, HellaSwag's validation set and FineWeb-Edu's first sample file, from the hub."""
    return Sources(GPT2_TOKENIZER, None, ("--data_files", FINEWEB_SLICE),
                   f"from the hub: tokenizer {GPT2_TOKENIZER}, HellaSwag validation, {FINEWEB_EDU} {FINEWEB_SLICE}")


def folder_sources(folder: Path) -> Sources:
    """The same from a folder: gpt2.tiktoken, a HellaSwag-schema JSONL, and plain text."""
    folder = Path(folder).resolve()
    tokenizer, jsonl, texts = folder / "gpt2.tiktoken", sorted(folder.glob("*.jsonl")), sorted(folder.rglob("*.txt"))
    missing = [need for need, found in zip(FOLDER_NEEDS, (tokenizer.exists(), jsonl, texts), strict=True) if not found]
    if missing:
        raise SourcesError(f"{folder} lacks {'; '.join(missing)}")
    flags = ("--dataset", "text", "--data_files", *map(str, texts), "--text_unit", "paragraph", "--tokenizer",
             str(tokenizer))
    return Sources(str(tokenizer), str(jsonl[0]), flags,
                   f"from {folder}: {tokenizer.name}, {jsonl[0].name}, {len(texts)} text files")
