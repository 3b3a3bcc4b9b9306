"""Token counts at validation are transformers' own, read without importing transformers.

Every tokenizer folder of every family's tiny checkpoint (and the built-in
ones) is counted both ways, through ``tokenizer.json`` alone and through the
transformers class its config names, over texts that exercise normalizers,
byte fallbacks and special tokens.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_families import builders

from reprogrid.scheduler.checkpoint_refs import BUILTIN_DIR
from reprogrid.scheduler.tokenization import (
    TOKENIZER_FOLDERS,
    _file_counter,
    _transformers_counter,
    token_counter,
)

TEXTS = [
    "a red fox",
    "A RED FOX, Highly Detailed!!",
    "  leading and trailing spaces  ",
    "two\nlines\tand a tab",
    "ünïcödé café, 東京の夜景, emoji 🦊🌙",
    "a " * 200,
    "",
    "<|endoftext|> </s> [CLS] special-looking text",
]


def tokenizer_folders(checkpoint: Path) -> list[Path]:
    folders = [checkpoint / name for name in TOKENIZER_FOLDERS]
    return [f for f in folders if (f / "tokenizer_config.json").is_file()]


def both_ways(folder: Path) -> tuple[list[int], int, list[int], int]:
    import json

    config = json.loads((folder / "tokenizer_config.json").read_text())
    direct, through = _file_counter(folder, config), _transformers_counter(folder, config)
    return (
        direct.count(TEXTS),
        direct.model_max_length,
        through.count(TEXTS),
        through.model_max_length,
    )


@pytest.mark.parametrize("name", sorted(builders()))
def test_each_family_tokenizer_json_counts_as_transformers_does(tiny_checkpoint, name):
    folders = tokenizer_folders(tiny_checkpoint(name))
    assert folders, f"{name} has no tokenizer"
    for folder in folders:
        counts, limit, expected_counts, expected_limit = both_ways(folder)
        assert counts == expected_counts, folder.name
        assert limit == expected_limit, folder.name


@pytest.mark.parametrize("name", ["tiny", "shapes"])
def test_the_builtin_tokenizers_count_as_transformers_does(name):
    (folder,) = tokenizer_folders(BUILTIN_DIR / name)
    counts, limit, expected_counts, expected_limit = both_ways(folder)
    assert (counts, limit) == (expected_counts, expected_limit)


def test_validation_reads_tokenizer_json_without_importing_transformers():
    expected = both_ways(BUILTIN_DIR / "tiny" / "tokenizer")[2][0]  # "a red fox"
    code = (
        "import sys; from reprogrid.scheduler.tokenization import tokenize_texts;"
        "from reprogrid.scheduler.checkpoint_refs import BUILTIN_DIR;"
        "report = tokenize_texts(BUILTIN_DIR / 'tiny', [('prompt', 'a red fox')]);"
        f"assert report.counts[0].tokens == {{'tokenizer': {expected}}}, report;"
        "assert 'transformers' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_config_option_applied_at_load_time_goes_through_transformers(tmp_path: Path):
    folder = tmp_path / "tokenizer"
    shutil.copytree(BUILTIN_DIR / "tiny" / "tokenizer", folder)
    config = (folder / "tokenizer_config.json").read_text()
    (folder / "tokenizer_config.json").write_text(
        config.replace("{", '{\n  "add_prefix_space": false,', 1)
    )
    code = (
        "import sys; from pathlib import Path;"
        "from reprogrid.scheduler.tokenization import token_counter;"
        f"token_counter(Path({str(folder)!r})).count(['a fox']);"
        "assert 'transformers' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert token_counter(folder).count(TEXTS) == both_ways(BUILTIN_DIR / "tiny" / "tokenizer")[0]
