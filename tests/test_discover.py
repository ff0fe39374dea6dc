"""Shard discovery: which files are read, in what order, under what output name, and which
shard-like files are named as not read."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from tartok_tui.shards.discover import (
    InputError,
    discover_shards,
    discover_tars,
    output_stem,
)

RESERVED = frozenset({"errors", ".partial", "logs"})


@pytest.fixture
def tar_tree(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    for rel in [
        "b.tar",
        "a.tar",
        "c.tar",
        "d.tar.gz",
        "e.tgz",
        "sub/a.tar",
        "sub/deeper/z.tar",
        "a-b/x.tar",
        # Looks like a shard, is not read:
        "f.tar.zst",
        "g.zip",
        "h.tar.bz2",
        "i.tar.part",
        "sub/j.tar.xz",
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    (root / "notes.txt").write_text("not a tar")
    (root / "tarball").write_text("not a tar either")
    return root


def rels(root: Path, paths: list[Path]) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def test_discover_lists_top_level_shards_sorted(tar_tree: Path) -> None:
    found = discover_shards(tar_tree)
    assert rels(tar_tree, found.tars) == ["a.tar", "b.tar", "c.tar", "d.tar.gz", "e.tgz"]
    assert found.ignored == ["f.tar.zst", "g.zip", "h.tar.bz2", "i.tar.part"]


def test_discover_recursive_descends_sorted_by_relative_path(tar_tree: Path) -> None:
    found = discover_shards(tar_tree, recursive=True)
    assert rels(tar_tree, found.tars) == [
        "a-b/x.tar",
        "a.tar",
        "b.tar",
        "c.tar",
        "d.tar.gz",
        "e.tgz",
        "sub/a.tar",
        "sub/deeper/z.tar",
    ]
    assert found.ignored == ["f.tar.zst", "g.zip", "h.tar.bz2", "i.tar.part", "sub/j.tar.xz"]


@pytest.mark.parametrize(
    ("start", "stop"), [(0, None), (1, None), (1, 3), (0, 0), (4, 100), (2, 1), (10, None)]
)
def test_discover_slices_like_python(tar_tree: Path, start: int, stop: int | None) -> None:
    everything = discover_tars(tar_tree, recursive=True)
    assert discover_tars(tar_tree, start, stop, recursive=True) == everything[start:stop]
    # The files not read are named whatever the slice.
    assert len(discover_shards(tar_tree, start, stop, recursive=True).ignored) == 5


def test_discover_returns_absolute_paths_from_a_relative_dir(
    tar_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tar_tree.parent)
    found = discover_tars(Path("in"))
    assert all(p.is_absolute() for p in found)
    assert found[:3] == [tar_tree / "a.tar", tar_tree / "b.tar", tar_tree / "c.tar"]


def test_discover_missing_dir_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        discover_tars(tmp_path / "nope")


def test_discover_file_instead_of_dir_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        discover_tars(tmp_path / "f")


def test_discover_rejects_a_subdir_named_like_a_reserved_output_dir(tmp_path: Path) -> None:
    (tmp_path / "errors").mkdir()
    (tmp_path / "errors" / "x.tar").write_bytes(b"")
    assert discover_tars(tmp_path, reserved_top_dirs=RESERVED) == []  # not looked at
    with pytest.raises(InputError, match="errors"):
        discover_tars(tmp_path, recursive=True, reserved_top_dirs=RESERVED)
    # Which names are reserved is the caller's to say.
    assert rels(tmp_path, discover_tars(tmp_path, recursive=True)) == ["errors/x.tar"]


def test_discover_survives_a_directory_link_loop(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.tar").write_bytes(b"")
    os.symlink(tmp_path, tmp_path / "sub" / "loop")
    found = rels(tmp_path, discover_tars(tmp_path, recursive=True))
    assert found == ["sub/x.tar"]


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("X.tar", "X"),
        ("sub/X.tar.gz", "sub/X"),
        ("sub/X.tgz", "sub/X"),
        ("EN-B000001.TAR.GZ", "EN-B000001.TAR"),
        ("a.b.tgz", "a.b"),
    ],
)
def test_a_gzipped_tar_is_named_after_the_tar_it_holds(name: str, stem: str) -> None:
    assert output_stem(PurePosixPath(name)) == PurePosixPath(stem)
    assert output_stem(PurePosixPath(name)).with_suffix(".jsonl").name.endswith(".jsonl")


@pytest.mark.parametrize("other", ["X.tar.gz", "X.tgz"])
def test_two_shards_with_one_output_name_are_refused(tmp_path: Path, other: str) -> None:
    (tmp_path / "X.tar").write_bytes(b"")
    (tmp_path / other).write_bytes(b"")
    with pytest.raises(InputError, match=f"X.tar and {other}|{other} and X.tar"):
        discover_shards(tmp_path)


def test_the_refusal_follows_the_output_names_whatever_the_case(tmp_path: Path) -> None:
    # a.TAR and a.tar.gz both write a.jsonl: refused.
    (tmp_path / "a.TAR").write_bytes(b"")
    (tmp_path / "a.tar.gz").write_bytes(b"")
    with pytest.raises(InputError, match="would both write the outputs named a;"):
        discover_shards(tmp_path)
    # X.TAR writes X.jsonl, X.TAR.gz writes X.TAR.jsonl: both kept.
    other = tmp_path / "other"
    other.mkdir()
    (other / "X.TAR").write_bytes(b"")
    (other / "X.TAR.gz").write_bytes(b"")
    assert [p.name for p in discover_shards(other).tars] == ["X.TAR", "X.TAR.gz"]


def test_an_empty_directory_has_no_shards(tmp_path: Path) -> None:
    assert discover_shards(tmp_path) == discover_shards(tmp_path, recursive=True)
    assert discover_shards(tmp_path).tars == [] and discover_shards(tmp_path).ignored == []


def test_the_shards_package_does_not_import_the_output_package() -> None:
    import subprocess
    import sys

    code = (
        "import sys, tartok_tui.shards.discover, tartok_tui.shards.reader; "
        "print(sorted(m for m in sys.modules if m.startswith('tartok_tui.output')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
