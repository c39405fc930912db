"""`mtl fetch` against a loopback fake engine: real HTTP, icrawler's real parsers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mtl.cli import app
from mtl.crawler import FetchRequest, fetch
from mtl.crawler.engines import rewrite_url
from mtl.crawler.keywords import slugify
from tests.fakes.engine_server import FakeEngine, encode, jpeg, picture, png

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = "1"  # the slow host trickles for 2 s
FAST = ["--min-size", "100x100", "--timeout", TIMEOUT, "--threads", "4", "--quiet"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEngine]:
    with FakeEngine() as fake:
        monkeypatch.setenv("MTL_ENGINE_URL", fake.base)
        yield fake


def bird_results(engine: FakeEngine) -> None:
    """blue tit: every kind of bad download before the good ones; crow shares one picture."""
    add = engine.add
    good1 = jpeg(1)
    engine.set_results(
        "blue tit",
        [
            add("/i/good1.jpg", good1),
            add("/i/dup1.jpg", good1),  # same bytes, other URL
            add("/i/near1.jpg", encode(picture(1).resize((256, 192)), "JPEG", quality=40)),
            add("/i/trunc.jpg", good1[: len(good1) // 2]),
            add("/i/page.jpg", b"<html><body>hotlinking denied</body></html>", "text/html"),
            add("/i/tiny.jpg", jpeg(3, (50, 50))),
            engine.url("/i/missing.jpg"),  # 404
            add("/i/error.jpg", b"oops", "text/plain", status=500),
            add("/i/slow.jpg", jpeg(4), trickle=2.0),
            add("/i/shared.jpg", jpeg(5)),
            add("/i/good2.jpg", png(6)),  # a PNG behind a .jpg URL
            add("/i/good3.jpg", jpeg(7)),
            add("/i/good4.jpg", jpeg(8)),
            add("/i/good5.jpg", jpeg(9)),
        ],
    )
    engine.set_results(
        "crow",
        [engine.url("/i/shared.jpg")] + [add(f"/i/crow{i}.jpg", jpeg(100 + i)) for i in range(6)],
    )


def run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["fetch", *args])
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return result.exit_code, result.stdout, result.stderr


def manifest(out: Path) -> list[dict[str, object]]:
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def snapshot(out: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in out.rglob("*")
        if p.is_file() and p.suffix != ".jsonl"
    }


def test_fetch_keeps_only_good_unique_images_then_resumes(engine: FakeEngine, tmp_path: Path):
    bird_results(engine)
    out = tmp_path / "data"
    start = time.monotonic()
    code, stdout, stderr = run(["blue tit", "crow", "--limit", "3", "--out", str(out), *FAST])
    assert code == 0, stdout + stderr
    assert time.monotonic() - start < 10

    # shared.jpg was kept as blue_tit/000002.jpg, then found under crow: removed from both.
    assert files(out) == [
        "ambiguous.jsonl",
        "blue_tit/000001.jpg",
        "blue_tit/000003.png",
        "blue_tit/000004.jpg",
        "crow/000001.jpg",
        "crow/000002.jpg",
        "crow/000003.jpg",
        "manifest.jsonl",
    ]
    rows = manifest(out)
    by_file = {r["file"]: r for r in rows}
    assert [r["file"] for r in rows] == sorted(by_file)
    assert by_file["blue_tit/000001.jpg"]["url"] == engine.url("/i/good1.jpg")
    assert by_file["blue_tit/000003.png"]["url"] == engine.url("/i/good2.jpg")
    assert by_file["crow/000003.jpg"]["url"] == engine.url("/i/crow2.jpg")
    for row in rows:
        path = out / str(row["file"])
        with Image.open(path) as img:
            img.load()
            assert (row["width"], row["height"]) == img.size == (320, 240)
        assert row["class"] == str(row["file"]).split("/")[0]
        assert row["engine"] == "bing"
        assert len(str(row["sha256"])) == 64 and len(str(row["phash"])) == 16
        assert str(row["fetched"]).endswith("Z")
    assert not list(out.rglob(".mtl-tmp-*"))

    assert "blue_tit" in stdout and "crow" in stdout
    assert "same picture under blue_tit and crow" in stderr
    ambiguous = json.loads((out / "ambiguous.jsonl").read_text())
    assert ambiguous["removed"] == ["blue_tit/000002.jpg"]
    assert ambiguous["urls"] == [engine.url("/i/shared.jpg")]

    # Resume with a higher limit: only the shortfall is fetched, nothing is touched.
    before = snapshot(out)
    hits_before = dict(engine.hits)
    code, stdout, _ = run(["blue tit", "crow", "--limit", "5", "--out", str(out), "--json", *FAST])
    assert code == 0
    report = json.loads(stdout)
    assert {f: snapshot(out)[f] for f in before} == before
    blue, crow = report["classes"]
    assert (blue["class"], blue["existing"], blue["kept"]) == ("blue_tit", 3, 5)
    assert blue["new_files"] == ["blue_tit/000005.jpg", "blue_tit/000006.jpg"]
    assert crow["new_files"] == ["crow/000004.jpg", "crow/000005.jpg"]
    for kept in ("/i/good1.jpg", "/i/good2.jpg", "/i/good3.jpg", "/i/crow0.jpg"):
        assert engine.hits[kept] == hits_before[kept], f"{kept} downloaded again"
    assert engine.hits["/i/good5.jpg"] == 1
    # The ambiguous picture stays refused on resume.
    assert blue["rejected"]["ambiguous"] == 1
    assert len(manifest(out)) == 10


def test_rejections_are_counted_by_reason(engine: FakeEngine, tmp_path: Path):
    bird_results(engine)
    result = fetch(
        FetchRequest(
            keywords=["blue tit", "crow"],
            out=tmp_path,
            limit=3,
            min_size="100x100",
            timeout=float(TIMEOUT),
        )
    )
    blue, crow = result.classes
    assert blue.rejected == {
        "not_image": 1,
        "truncated": 1,
        "too_small": 1,
        "too_large": 0,
        "http_error": 2,
        "timeout": 1,
        "duplicate": 2,
        "ambiguous": 0,
        "set_aside": 0,
    }
    assert crow.rejected["ambiguous"] == 1 and sum(crow.rejected.values()) == 1
    assert result.complete
    assert [a.classes for a in result.ambiguous] == [("blue_tit", "crow")]


def test_too_large_downloads_are_refused(engine: FakeEngine, tmp_path: Path):
    big = engine.add("/i/big.jpg", encode(picture(20, (1600, 1200)), "PNG"))
    engine.set_results("owl", [big, engine.add("/i/ok.jpg", jpeg(21))])
    result = fetch(FetchRequest(["owl"], out=tmp_path, limit=2, min_size="10x10", max_mb=0.5))
    (owl,) = result.classes
    assert owl.rejected["too_large"] == 1 and owl.kept == 1
    assert owl.short == 1 and "no more results" in owl.why_short


def test_short_keyword_exits_3_and_says_why(engine: FakeEngine, tmp_path: Path):
    engine.set_results("crow", [engine.add("/i/c.jpg", jpeg(30))])
    code, stdout, _ = run(["crow", "--limit", "4", "--out", str(tmp_path), *FAST])
    assert code == 3
    assert "short 3" in stdout
    assert "crow: 3 short: the engine has no more results" in stdout


@pytest.mark.parametrize(
    ("setup", "why"),
    [
        (lambda e: e.add("/images/async", b"boom", "text/plain", status=500), "HTTP 500"),
        (lambda e: e.add("/images/async", b"<html><p>new look</p></html>", "text/html"), "layout"),
        (lambda e: e.add("/images/async", b"<html></html>", "text/html", trickle=2.0), "timeout"),
    ],
    ids=["page-500", "changed-layout", "slow-page"],
)
def test_engine_faults_end_the_run_cleanly(engine: FakeEngine, tmp_path: Path, setup, why):
    setup(engine)
    start = time.monotonic()
    code, stdout, stderr = run(["crow", "--limit", "2", "--out", str(tmp_path), *FAST, "--json"])
    assert code == 3, stderr
    assert time.monotonic() - start < 5
    (crow,) = json.loads(stdout)["classes"]
    assert crow["kept"] == 0 and why in crow["why_short"]


def test_unreachable_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("MTL_ENGINE_URL", f"http://127.0.0.1:{closed_port()}")
    code, stdout, _ = run(["crow", "--limit", "2", "--out", str(tmp_path), *FAST, "--json"])
    assert code == 3
    assert "search page failed (network error" in json.loads(stdout)["classes"][0]["why_short"]


@pytest.mark.parametrize("engine_name", ["google", "baidu"])
def test_other_engines_pages_parse(engine: FakeEngine, tmp_path: Path, engine_name: str):
    engine.set_results("crow", [engine.add(f"/i/c{i}.jpg", jpeg(40 + i)) for i in range(3)])
    code, stdout, _ = run(
        ["crow", "--engine", engine_name, "--limit", "3", "--out", str(tmp_path), *FAST]
    )
    assert code == 0, stdout
    assert files(tmp_path) == [
        "crow/000001.jpg",
        "crow/000002.jpg",
        "crow/000003.jpg",
        "manifest.jsonl",
    ]
    assert {r["engine"] for r in manifest(tmp_path)} == {engine_name}


@pytest.mark.parametrize("engine_name", ["bing", "google", "baidu"])
def test_png_webp_and_extensionless_results_are_kept(
    engine: FakeEngine, tmp_path: Path, engine_name: str
):
    """Every engine's image URLs count, whatever they end in (icrawler's Bing parser kept
    only .jpg, its Google parser .jpg/.png/.bmp); the file gets its real format's name."""
    engine.set_results(
        "owl",
        [
            engine.add("/i/owl.png", png(70), "image/png"),
            engine.add("/i/owl.webp", encode(picture(71), "WEBP", quality=90), "image/webp"),
            engine.add("/photo", jpeg(72)) + "?id=73&size=large",
            engine.add("/i/owl.jpg", jpeg(74)),
        ],
    )
    out = tmp_path / "data"
    args = ["owl", "--engine", engine_name, "--limit", "4", "--out", str(out), *FAST, "--json"]
    code, stdout, stderr = run(args)
    assert code == 0, stdout + stderr
    assert files(out) == [
        "manifest.jsonl",
        "owl/000001.png",
        "owl/000002.webp",
        "owl/000003.jpg",
        "owl/000004.jpg",
    ]
    assert [r["url"] for r in manifest(out)][2] == engine.url("/photo?id=73&size=large")


def test_no_more_results_only_when_the_list_ended(engine: FakeEngine, tmp_path: Path):
    """A page of results mtl cannot read is not "no more results"."""
    engine.set_results("owl", [engine.add("/i/a.png", png(80), "image/png")])
    code, stdout, _ = run(["owl", "--limit", "2", "--out", str(tmp_path / "a"), *FAST, "--json"])
    assert code == 3
    assert json.loads(stdout)["classes"][0]["why_short"] == "the engine has no more results"
    page = (
        '<html><div class="imgpt"><a m="{&quot;turl&quot;:&quot;x&quot;}">x</a></div>'
        '<div class="imgpt"><a m="not json">y</a></div></html>'
    )
    engine.add("/images/async", page.encode(), "text/html")
    code, stdout, _ = run(["owl", "--limit", "2", "--out", str(tmp_path / "b"), *FAST, "--json"])
    assert code == 3
    why = json.loads(stdout)["classes"][0]["why_short"]
    assert "listed 2 result(s) without a readable image URL" in why, why


def test_url_list(engine: FakeEngine, tmp_path: Path):
    shared = engine.add("/u/shared.jpg", jpeg(60))
    lines = [
        "# label<TAB>url, or a bare url for the one KEYWORD",
        f"cat\t{engine.add('/u/cat1.jpg', jpeg(61))}",
        f"cat\t{engine.add('/u/cat2.png', png(62))}",
        f"cat\t{shared}",
        f"cat\thttp://127.0.0.1:{closed_port()}/refused.jpg",
        "",
        f"dog\t{engine.add('/u/dog1.jpg', jpeg(63))}",
        f"dog\t{shared}",
        f"dog\t{engine.url('/u/gone.jpg')}",
    ]
    listing = tmp_path / "urls.tsv"
    listing.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "data"
    code, stdout, _ = run(["--urls", str(listing), "--limit", "3", "--out", str(out), *FAST])
    assert code == 3, stdout
    assert files(out) == [
        "ambiguous.jsonl",
        "cat/000001.jpg",
        "cat/000002.png",
        "dog/000001.jpg",
        "manifest.jsonl",
    ]
    assert {r["engine"] for r in manifest(out)} == {"urls"}
    # cat was full until dog also listed the shared picture; its last URL is refused.
    assert "cat: 1 short: the URL list has no more entries" in stdout
    assert "dog: 2 short: the URL list has no more entries" in stdout

    # Resume downloads nothing already kept.
    hits = dict(engine.hits)
    code, _, _ = run(["--urls", str(listing), "--limit", "3", "--out", str(out), *FAST])
    assert code == 3
    assert engine.hits["/u/cat1.jpg"] == hits["/u/cat1.jpg"]
    assert engine.hits["/u/dog1.jpg"] == hits["/u/dog1.jpg"]


def test_url_list_unlabelled_lines_go_to_the_keyword(engine: FakeEngine, tmp_path: Path):
    listing = tmp_path / "crows.txt"
    listing.write_text(engine.add("/u/c.jpg", jpeg(70)) + "\n")
    code, _, _ = run(["Crow", "--urls", str(listing), "--limit", "1", "--out", str(tmp_path / "d")])
    assert code == 0
    assert (tmp_path / "d" / "crow" / "000001.jpg").is_file()
    code, _, stderr = run(["--urls", str(listing), "--out", str(tmp_path / "e")])
    assert code == 2 and "has no label" in stderr


@pytest.mark.parametrize(
    "keywords",
    [["../x"], ["a/b"], ["."], [""], ["  "], ["crow", "Crow"], ["blue tit", "blue__tit!"]],
    ids=["dotdot", "slash", "dot", "empty", "blank", "case", "punctuation"],
)
def test_bad_keywords_are_refused_before_any_download(
    engine: FakeEngine, tmp_path: Path, keywords: list[str]
):
    out = tmp_path / "data"
    code, stdout, stderr = run([*keywords, "--out", str(out), *FAST])
    assert code == 2
    assert stderr.startswith("error:") and len(stderr.strip().splitlines()) == 1
    assert "Traceback" not in stderr + stdout
    assert not out.exists() and not engine.hits


@pytest.mark.parametrize(
    "args",
    [
        ["crow", "--engine", "yahoo"],
        ["crow", "--min-size", "big"],
        ["crow", "--limit", "0"],
        ["crow", "--urls", "/nonexistent/urls.txt"],
        [],
    ],
)
def test_bad_options_exit_2(engine: FakeEngine, tmp_path: Path, args: list[str]):
    code, _, stderr = run([*args, "--out", str(tmp_path / "d")])
    assert code == 2 and not engine.hits
    if "--engine" in args:  # a choice: the usage error names the value and the choices
        assert "yahoo" in stderr and "bing" in stderr and "flickr" in stderr
    else:
        assert stderr.startswith("error:")


def test_unicode_keyword(engine: FakeEngine, tmp_path: Path):
    engine.set_results("mésange bleue", [engine.add("/i/m.jpg", jpeg(80))])
    code, _, _ = run(["mésange bleue", "--limit", "1", "--out", str(tmp_path), *FAST])
    assert code == 0
    assert engine.queries == ["mésange bleue"]
    assert (tmp_path / "mésange_bleue" / "000001.jpg").is_file()
    assert manifest(tmp_path)[0]["class"] == "mésange_bleue"


def test_existing_files_are_counted_and_kept(engine: FakeEngine, tmp_path: Path):
    folder = tmp_path / "crow"
    folder.mkdir()
    picture(90).save(folder / "mine.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(jpeg(91)[:500])
    (folder / ".mtl-tmp-x.part").write_bytes(b"left by a killed run")
    engine.set_results("crow", [engine.add("/i/a.jpg", jpeg(92)), engine.add("/i/b.jpg", jpeg(93))])
    result = fetch(FetchRequest(["crow"], out=tmp_path, limit=2, min_size="100x100"))
    (crow,) = result.classes
    assert (crow.existing, crow.kept, crow.new_files) == (1, 2, ["crow/000001.jpg"])
    assert files(tmp_path) == sorted(
        ["crow/000001.jpg", "crow/broken.jpg", "crow/mine.jpg", "manifest.jsonl"]
    )
    assert any("broken.jpg is not counted" in n for n in result.notes)
    assert {r["file"]: r["engine"] for r in manifest(tmp_path)}["crow/mine.jpg"] == "local"


def test_interrupted_run_leaves_no_partial_files(engine: FakeEngine, tmp_path: Path):
    engine.set_results("crow", [engine.add(f"/i/k{i}.jpg", jpeg(200 + i)) for i in range(12)])

    def interrupt(slug: str, keyword: str, kept: int, limit: int) -> None:
        if kept == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch(FetchRequest(["crow"], out=tmp_path, limit=10, min_size="10x10"), interrupt)
    # Everything on disk is a whole, listed image; the rest of the chunk was cleaned up.
    assert files(tmp_path) == ["crow/000001.jpg", "crow/000002.jpg", "manifest.jsonl"]
    assert [r["file"] for r in manifest(tmp_path)] == ["crow/000001.jpg", "crow/000002.jpg"]
    result = fetch(FetchRequest(["crow"], out=tmp_path, limit=3, min_size="10x10"))
    assert (result.classes[0].existing, result.classes[0].new_files) == (2, ["crow/000003.jpg"])


def test_slugs_and_url_rewriting():
    assert slugify("blue tit") == "blue_tit"
    assert slugify("Ｂｌｕｅ Tit") == "blue_tit"  # full-width letters
    assert slugify("シジュウカラ") == "シジュウカラ"
    base = ("http", "127.0.0.1:8765")
    assert (
        rewrite_url("https://www.bing.com/images/async?q=blue+tit&first=0", base)
        == "http://127.0.0.1:8765/images/async?q=blue+tit&first=0"
    )
    assert rewrite_url("https://www.bing.com/x", None) == "https://www.bing.com/x"


def test_help_has_examples_and_env():
    result = CliRunner().invoke(app, ["fetch", "--help"])
    assert result.exit_code == 0
    assert "mtl fetch" in result.stdout and "MTL_ENGINE_URL" in result.stdout


def test_fetch_never_imports_tensorflow(engine: FakeEngine, tmp_path: Path):
    engine.set_results("crow", [engine.add("/i/a.jpg", jpeg(95))])
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mtl.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        f"args = ['fetch', 'crow', '--limit', '1', '--out', {str(tmp_path)!r}]\n"
        "r = CliRunner().invoke(app, args)\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "MTL_ENGINE_URL": engine.base}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "crow" / "000001.jpg").is_file()


def test_fetch_options_read_the_one_table_of_defaults(cli, tmp_path):
    """`mtl fetch`'s options default to FetchRequest's own (mtl.crawler.request); a typo of
    an engine gets one line with the near miss, before anything is downloaded."""
    import typer

    from mtl.cli import app
    from mtl.crawler.request import DEFAULT

    command = typer.main.get_command(app).commands["fetch"]  # type: ignore[attr-defined]
    defaults = {p.name: p.default for p in command.params}
    for name in ("engine", "limit", "min_size", "threads", "timeout", "deadline", "max_mb"):
        assert defaults[name] == getattr(DEFAULT, name), name
    assert Path(defaults["out_dir"]) == DEFAULT.out
    result = cli.invoke(app, ["fetch", "crow", "--engine", "bign", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: unknown --engine 'bign'; choose one of bing, google, baidu, flickr; "
        "did you mean 'bing'?"
    )
    assert not (tmp_path / "d").exists()
