"""What a copy never carries: daulat's local state (keys, journal, audit log) and objects in its
reserved ``.daulat/`` namespace (see :mod:`daulat.transfer.keepout`).

Every test runs the ``daulat`` command over a ``daulat.toml`` in ``tmp_path`` against real
directories and SeaweedFS, then looks at the stores themselves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import fs_store_config, s3_store_config
from servers import S3Server
from test_transfer import cli, fill_config, unique, write_config


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _fs(root: Path, name: str, url: str | None = None) -> dict[str, Any]:
    raw = fs_store_config(root, name)
    if url is not None:
        raw["url"] = url
    return raw


# ------------------------------------------------------------------- #13: local state is no data


def test_exit_of_a_directory_holding_the_state_never_copies_keys_or_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The store is the project's parent directory: the state directory (proj/.daulat/, with
    the private signing and proof keys, the journal and the audit log) is left out, said so
    in the JSON and on stderr, and the rest is copied and verified."""
    home = tmp_path / "home"
    proj = home / "proj"
    (home / "docs").mkdir(parents=True)
    (home / "docs" / "a.txt").write_text("doc")
    (proj / "notes.txt").parent.mkdir(parents=True, exist_ok=True)
    (proj / "notes.txt").write_text("notes")
    cloud = tmp_path / "cloud"
    write_config(proj, [_fs(home, "home", "file:.."), _fs(cloud, "cloud")])
    monkeypatch.chdir(proj)
    first = cli(["exit", "home:docs", "cloud:docs"], capsys)
    assert first.code == 0, first.explain()
    assert (proj / ".daulat" / "keys" / "signing").is_file()
    assert (proj / ".daulat" / "transfers.sqlite").is_file()

    res = cli(["exit", "home", "cloud:all", "--json"], capsys)
    assert res.code == 0, res.explain()
    copied = _tree(cloud / "all")
    assert not [k for k in copied if "/.daulat/" in "/" + k and not k.startswith(".daulat/")]
    assert {"docs/a.txt", "proj/notes.txt", "proj/daulat.toml"} <= copied
    summary = res.json
    assert summary["skipped_state"] == ["proj/.daulat/"]
    assert summary["skipped_state_objects"] >= 3
    assert any("proj/.daulat/" in n and "private keys" in n for n in summary["notes"])
    # verify agrees: the state left out is not "missing" at the destination.
    checked = cli(["verify", "home", "cloud:all"], capsys)
    assert checked.code == 0, checked.out + checked.err


def test_another_projects_state_directory_at_any_depth_is_not_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    other = src / "deep" / "other" / ".daulat"
    (other / "keys").mkdir(parents=True)
    (other / "keys" / "signing").write_text("PRIVATE")
    (other / "names").mkdir()
    (other / "names" / "x.key").write_text("NAMEKEY")
    (other / "transfers.sqlite").write_bytes(b"SQLite")
    (other / "audit.jsonl").write_text("{}\n")
    (src / "deep" / "keep.txt").write_text("keep")
    # A nested copy's manifest under sub/.daulat/ is data of the source (copied as before).
    (src / "sub" / ".daulat").mkdir(parents=True)
    (src / "sub" / ".daulat" / "notes.txt").write_text("user notes")
    write_config(tmp_path, [_fs(src, "src"), _fs(dst, "dst")])
    monkeypatch.chdir(tmp_path)
    res = cli(["exit", "src", "dst", "--json"], capsys)
    assert res.code == 0, res.explain()
    assert _tree(dst) - {k for k in _tree(dst) if k.startswith(".daulat/")} == {
        "deep/keep.txt",
        "sub/.daulat/notes.txt",
    }
    assert res.json["skipped_state"] == ["deep/other/.daulat/"]
    assert res.json["skipped_state_objects"] == 4


def test_a_store_inside_the_state_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    write_config(
        tmp_path,
        [
            _fs(src, "src"),
            _fs(tmp_path / "state", "state", "file:.daulat"),
            _fs(tmp_path, "here", "file:."),
            _fs(tmp_path / "x", "remote"),
        ],
    )
    monkeypatch.chdir(tmp_path)
    assert cli(["copy", "src", "remote"], capsys).code == 0  # the state directory exists
    before = _tree(tmp_path / ".daulat")
    into = cli(["exit", "src", "state:keys"], capsys)
    assert into.code == 2, into.out + into.err
    assert "state directory" in into.err and "Traceback" not in into.err
    out_of = cli(["exit", "here:.daulat", "remote:x"], capsys)
    assert out_of.code == 2, out_of.out + out_of.err
    assert "state directory" in out_of.err
    # Only the audit log's own checkpoint of the chain it verified may appear: no object.
    assert _tree(tmp_path / ".daulat") - {"audit.verified"} == before - {"audit.verified"}
    assert not (tmp_path / "x" / "x").exists()


def test_sync_delete_into_a_directory_holding_the_state_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A destination that contains the state directory: sync --delete never deletes it, and a
    source object whose name falls inside it is refused, not written."""
    home, proj = tmp_path / "home", tmp_path / "home" / "proj"
    src = tmp_path / "src"
    (src / "proj" / ".daulat").mkdir(parents=True)
    (src / "proj" / ".daulat" / "planted.txt").write_text("x")
    (src / "b.txt").write_text("b")
    proj.mkdir(parents=True)
    write_config(proj, [_fs(src, "src"), _fs(home, "home", "file:..")])
    monkeypatch.chdir(proj)
    res = cli(
        ["sync", "src", "home", "--delete", "--max-delete", "100%", "--json"], capsys
    )
    assert res.code == 1, res.explain()
    assert [r["key"] for r in res.json["refused"]] == ["proj/.daulat/planted.txt"]
    assert not (proj / ".daulat" / "planted.txt").exists()
    assert (proj / ".daulat" / "keys" / "signing").is_file()
    assert (proj / ".daulat" / "transfers.sqlite").is_file()
    assert (home / "b.txt").read_text() == "b"


# ------------------------------------------------- #18: the source's .daulat/ is not silently lost


def test_user_objects_under_a_sources_daulat_dir_are_reserved_not_silently_dropped(
    tmp_path: Path,
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    coll = s3_store_config(s3_server, "coll", unique("keepout-coll"))
    fill_config(
        coll,
        {
            "a.txt": b"a",
            ".daulat/payroll-2024.xlsx": b"important user data",
            ".daulat/manifest-2099.jsonl": b"not a daulat manifest",
            "sub/.daulat/notes.txt": b"user notes",
        },
    )
    dst = tmp_path / "cdst"
    write_config(tmp_path, [coll, _fs(dst, "cdst")])
    monkeypatch.chdir(tmp_path)
    res = cli(["exit", "coll", "cdst", "--json"], capsys)
    assert res.code == 1, res.explain()
    summary = res.json
    assert summary["ok"] is False
    assert summary["reserved_objects"] == 1
    assert summary["reserved"] == [".daulat/payroll-2024.xlsx"]
    assert summary["reserved_bytes"] == len(b"important user data")
    copied = {k for k in _tree(dst) if not k.startswith(".daulat/")}
    assert copied == {"a.txt", "sub/.daulat/notes.txt"}
    assert not [k for k in _tree(dst) if "payroll" in k or "2099" in k]

    human = cli(["exit", "coll", "cdst"], capsys)
    assert human.code == 1
    assert "reserved: '.daulat/payroll-2024.xlsx'" in human.out
    assert "incomplete" in human.err and "Move or rename" in human.err
    assert "complete: every object verified" not in human.out


def test_daulats_own_files_under_a_replicas_daulat_dir_stay_out_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exit from an earlier exit's destination: its manifests and signatures are daulat's,
    skipped as before; the run is complete."""
    src, mid, end = tmp_path / "src", tmp_path / "mid", tmp_path / "end"
    src.mkdir()
    (src / "a.txt").write_text("a")
    write_config(tmp_path, [_fs(src, "src"), _fs(mid, "mid"), _fs(end, "end")])
    monkeypatch.chdir(tmp_path)
    assert cli(["exit", "src", "mid"], capsys).code == 0
    assert any(n.startswith("manifest-") for n in os.listdir(mid / ".daulat"))
    res = cli(["exit", "mid", "end", "--json"], capsys)
    assert res.code == 0, res.explain()
    assert res.json["reserved_objects"] == 0 and res.json["skipped_state"] == []


def test_verify_counts_and_names_the_sources_reserved_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """verify leaves the source's reserved objects out of the comparison, as the copy did,
    but says so: counted in the JSON, named in the human output."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    fill_config(_fs(src, "src"), {"a.txt": b"a", ".daulat/payroll-2024.xlsx": b"user data"})
    write_config(tmp_path, [_fs(src, "src"), _fs(dst, "dst")])
    monkeypatch.chdir(tmp_path)
    assert cli(["exit", "src", "dst"], capsys).code == 1  # incomplete: one reserved object
    res = cli(["verify", "src", "dst", "--json"], capsys)
    assert res.code == 0, res.explain()
    assert res.json["reserved_objects"] == 1, res.json
    assert res.json["reserved"] == [".daulat/payroll-2024.xlsx"], res.json
    assert res.json["reserved_bytes"] == len(b"user data") and res.json["objects"] == 1
    human = cli(["verify", "src", "dst"], capsys)
    assert "reserved: '.daulat/payroll-2024.xlsx'" in human.out, human.out
    assert "never copied, not compared" in human.out, human.out


def test_a_source_of_only_reserved_objects_is_not_called_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The refusal says what the source holds: objects under .daulat/, daulat's reserved
    namespace, not copied; not "lists no objects"."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    fill_config(_fs(src, "src"), {".daulat/payroll-2024.xlsx": b"user data"})
    write_config(tmp_path, [_fs(src, "src"), _fs(dst, "dst")])
    monkeypatch.chdir(tmp_path)
    res = cli(["exit", "src", "dst"], capsys)
    assert res.code == 2, res.explain()
    assert "lists no objects" not in res.err, res.err
    assert "1 under its .daulat/" in res.err and "were not copied" in res.err, res.err
    assert "daulat's own" in res.err and "Traceback" not in res.err, res.err
    assert not dst.exists() or not _tree(dst)
