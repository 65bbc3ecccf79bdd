"""The book's pages: numbers come from the runs, the summary follows the claims, pages read clean.

The lint rule for hand-written pages (``book/intro.md``, ``book/chapters/*.md``):

    A *result number* is a decimal number (``0.42``, ``12.5``) or a percentage (``93 %``,
    ``4.5%``). None may appear in a page's prose. Numbers are allowed inside glue roles and
    directives (they come from the runs), code spans and code blocks, math, the content of any
    other role (``{cite}``, ``{doc}``, ...), link targets and comments; on a line that cites a
    paper with ``{cite}`` (the paper's numbers are citations); in a table column whose header
    says ``paper`` (the paper's numbers beside ours); in section references (``§3.2``) and
    dotted versions (``2.14.1``). Integers are not checked: counts, chapter numbers and image
    sizes read as prose. A design value (a learning rate, a sparsity) goes in a code span or,
    better, is glued from the run that used it.
"""

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from compstudy import claims, config, paths, runner, scale
from compstudy.studies import summary

from conftest import REPO, build_book, run_all

PAGES = [REPO / "book" / "intro.md", *sorted((REPO / "book" / "chapters").glob("*.md"))]

# ----------------------------------------------------------------------------- lint rule

_RESULT_NUMBER = re.compile(r"(?<![\w.§])(?:\d+(?:\.\d+)?[\s\u00a0\u202f]?%|\d+\.\d+(?![\w.]*\d))")
_FENCE = re.compile(r"^\s*(`{3,}|~{3,}|:{3,})\s*(\{([^}]*)\})?")
_DROPPED_DIRECTIVES = re.compile(r"^(glue.*|math|code|code-block|code-cell|bibliography|raw)$")
_INLINE = [
    re.compile(r"\{[^}\s]+\}`[^`]*`"),  # roles with their content: {glue:text}`...`, {cite}`...`
    re.compile(r"(`+)[^`]*?\1"),  # code spans
    re.compile(r"\$[^$]+\$"),  # inline math
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"<!--.*?-->"),  # comments
    re.compile(r"§\s*[\d.–-]+"),  # section references
]


def _cells(row: str) -> list[str]:
    return row.strip().strip("|").split("|")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """The page's lines as the rule reads them: blocks, spans and allowed cells removed."""
    kept, stack, drop_until, options, in_math = [], [], None, False, False
    paper_columns, in_table = set(), False
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        fence = _FENCE.match(line)
        if drop_until is not None:  # inside a code, math or glue block
            if fence and fence.group(1)[0] == drop_until[0] and len(fence.group(1)) >= len(drop_until) \
                    and not fence.group(2):
                drop_until = None
            continue
        if fence:
            marker, name = fence.group(1), fence.group(3)
            if stack and not fence.group(2) and marker[0] == stack[-1][0] and len(marker) >= len(stack[-1]):
                stack.pop()
            elif name is None and marker[0] != ":" or name is not None and _DROPPED_DIRECTIVES.match(name):
                drop_until = marker
            else:
                stack.append(marker)
                options = True
            continue
        if options and re.match(r"^\s*:[\w-]+:", line):
            continue
        options = False
        if line.strip() == "$$":
            in_math = not in_math
        if in_math or line.strip() == "$$" or line.lstrip().startswith("%") or "{cite" in line:
            continue
        if line.lstrip().startswith("|"):
            following = lines[number] if number < len(lines) else ""
            if not in_table and re.match(r"^\s*\|[\s:|-]+\|\s*$", following):
                paper_columns = {i for i, c in enumerate(_cells(line)) if "paper" in c.lower()}
                in_table = True
            elif in_table:
                line = "|".join("" if i in paper_columns else c for i, c in enumerate(_cells(line)))
        else:
            in_table = False
        for pattern in _INLINE:
            line = pattern.sub(" ", line)
        kept.append((number, line))
    return kept


def result_numbers(text: str) -> list[tuple[int, str]]:
    """(line, number) of every result number the rule finds in a page."""
    return [(number, match.group(0)) for number, line in prose_lines(text)
            for match in _RESULT_NUMBER.finditer(line)]


def test_the_rule_finds_typed_results():
    page = "# 1 · A chapter\n\nThe sparse model loses 3.4 points.\n\nIt reaches 93 % on CIFAR-10.\n"
    assert result_numbers(page) == [(3, "3.4"), (5, "93 %")]
    table = "| model | ours | paper |\n| --- | --- | --- |\n| VGG-16 | 93.1 | 93.5 |\n"
    assert result_numbers(table) == [(3, "93.1")]
    inside_a_dropdown = ":::{dropdown} Detail\n:open:\nThe gap is 2.5 points.\n:::\n"
    assert result_numbers(inside_a_dropdown) == [(3, "2.5")]


def test_the_rule_allows_glue_code_math_citations_and_the_papers_column():
    page = "\n".join([
        "The gap is {glue:text}`../runs/01_x/main.ipynb::claim_1.2_effect:+.1f` points.",
        "The paper reports 93.5 % on CIFAR-10 {cite}`liu2019rethinking`.",
        "We use `lr = 0.01` and $\\alpha = 0.3$, see §3.2 and torch 2.14.1, [link](https://x.org/1.5).",
        "```{glue:} claims_01_x", ":doc: ../runs/99_summary/main.ipynb", "```",
        "```python", "x = 0.5", "```",
        "$$", "T = 0.3 \\cdot SC_N", "$$",
        "| method | paper's top-1 |", "| --- | --- |", "| L1 | 93.4 |",
        "% a comment with 1.5",
        ":::{figure} ../runs/00_x/main/a.png", ":width: 90%", "Caption.", ":::",
    ])
    assert result_numbers(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_glue_text_from_another_page_names_its_format(page):
    """myst-nb splits ``path::key`` at its last colon: without ``:spec`` the key is lost."""
    bare = re.findall(r"\{glue:text\}`([^`]*::[^`:]*)`", page.read_text())
    assert not bare, f"{page.relative_to(REPO)}: add a format spec (:s for text) to {bare}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_pages_type_no_result_number(page):
    found = result_numbers(page.read_text())
    assert not found, f"{page.relative_to(REPO)} types results (glue them): {found}"


# ----------------------------------------------------------------------------- summary and scale


def _write_run(results, notebook, run, effect=1.25, seconds=75.0):
    folder = results / "smoke" / notebook / run
    rows = [claims.directional(claims.Claim("1.1", "A <b>bold</b> claim.", "Table 1.",
                                            "figure gap"), [effect, effect + 0.5, effect - 0.5]),
            claims.not_testable(claims.Claim("1.2", "Scales up.", "Table 2.", "-"), "no ImageNet")]
    claims.write_claims(folder, rows)
    scale.record_wall_time(folder, seconds, 1.0)
    return folder


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "RESULTS_DIR", tmp_path)
    return tmp_path


def _summary_config(**overrides):
    return summary.Config.from_overrides({"profile": "smoke", "run": "main", **overrides})


def test_the_summary_tables_come_from_claims_csv_and_link_relative_to_their_page(results):
    chapter = config.notebook_names()[1]
    _write_run(results, chapter, "main")
    cfg = _summary_config(papers={chapter: "Someone et al. 2020"})
    found = summary.collect(cfg)
    intro = summary.summary_table(found, cfg, summary.INTRO_ROOT).data
    assert "+1.2 [" in intro and "not testable" in intro and "Someone et al. 2020" in intro
    assert f'href="chapters/{chapter}.html"' in intro and f'href="runs/{chapter}/main.html"' in intro
    assert "&lt;b&gt;bold&lt;/b&gt;" in intro and "<b>bold" not in intro
    assert intro.count("Someone et al. 2020") == 1  # two claims, the paper named once
    assert summary.notebooks_with_claims(found) == [chapter]


def test_a_chapter_claims_table_has_five_columns_and_names_runs_other_than_main(results):
    chapter, ablation = next((nb, config.run_names("smoke", nb)[1]) for nb in config.notebook_names()
                             if len(config.run_names("smoke", nb)) > 1)
    _write_run(results, chapter, "main")
    _write_run(results, chapter, ablation)
    cfg = _summary_config()
    page = summary.chapter_claims_table(summary.collect(cfg), cfg, chapter, summary.CHAPTER_ROOT).data
    headers = re.findall(r"<th>(.*?)</th>", page)
    assert headers == ["claim", "verdict", "effect [95 % CI]", "test", "evidence"]
    assert ('<div class="compstudy-claim"><b>1.1</b> A &lt;b&gt;bold&lt;/b&gt; claim.<br>'
            "<small>Paper: Table 1.</small></div>") in page
    assert page.count("<td>not testable</td>") == 2
    assert page.count('<span class="compstudy-nowrap">—</span><br><small>no ImageNet</small>') == 2
    assert page.count('<span class="compstudy-nowrap">+1.2') == 2
    assert f'href="../runs/{chapter}/main.html"' in page
    assert f"(run {ablation})</a>" in page.replace("<wbr>", "") and "(run main)" not in page


def test_no_claims_yet_is_said_not_failed(results):
    cfg = _summary_config()
    assert "No run" in summary.summary_table(summary.collect(cfg), cfg, "").data


def test_what_ran_states_the_recorded_scale_and_wall_time(results):
    chapter = config.notebook_names()[0]
    cfg = config.load_config("smoke", chapter, "main")
    scale.record_scale(cfg, models=["deit_tiny"], resolution={"deit_tiny": 96}, targets=["cifar10"],
                       budgets={"epochs": 2}, seeds=[0, 1, 2], test_images_per_target={"cifar10": 2000})
    scale.record_wall_time(cfg.results_dir, 125.0, 1.234)
    table = summary.what_ran_table(summary.collect(_summary_config()), chapter)
    assert table["main"].to_dict() == {
        "profile": "smoke", "models": "deit_tiny", "resolution": "deit_tiny: 96",
        "targets": "cifar10", "budgets": "epochs: 2", "seeds": "0, 1, 2",
        "test images per target": "cifar10: 2000", summary.WALL_TIME_ROW: "2 min 05 s",
        summary.TOTAL_TIME_ROW: "2 min 05 s (1 execution)", summary.REUSED_ROW: "none",
        "host reference": "1.23 s"}
    with pytest.raises(TypeError, match="plain JSON"):
        scale.record_scale(cfg, models=[], resolution=1, targets=[], budgets={}, seeds=[],
                           test_images_per_target={"cifar10": np.int64(2000)})


def test_the_pages_show_what_ran_in_full(results):
    chapter = config.notebook_names()[0]
    cfg = config.load_config("smoke", chapter, "main")
    targets = ["cifar10", "fashion_mnist", "mnist", "digits", "near", "middle", "far"]
    scale.record_scale(cfg, models=["deit_tiny"], resolution={"deit_tiny": 96}, targets=targets,
                       budgets={"epochs": 2, "curve epochs": []}, seeds=[0],
                       test_images_per_target=dict.fromkeys(targets, 300))
    page = summary.what_ran_html(summary.collect(_summary_config()), chapter).data
    assert "cifar10: 300; fashion_mnist: 300; mnist: 300; digits: 300; near: 300; middle: 300; far: 300" in page
    assert "<th>what ran</th>" in page and "<td>test images per target</td>" in page
    assert "<td>epochs: 2; curve epochs: none</td>" in page


def test_the_total_wall_time_counts_every_execution_and_the_last_one_is_the_last_finished(results):
    chapter = config.notebook_names()[0]
    folder = results / "smoke" / chapter / "main"
    scale.record_wall_time(folder, 600.0, 0.5, finished=False)  # interrupted after 10 min
    assert scale.read_scale(folder) == {"total_seconds": 600.0, "executions": 1, "reused_artifacts": 0,
                                        "reused_build_seconds": 0.0}
    table = summary.what_ran_table(summary.collect(_summary_config()), chapter)["main"]
    assert table[summary.WALL_TIME_ROW] == "unfinished"
    scale.record_wall_time(folder, 300.0, 0.6)  # resumed: only the rest was computed
    scale.record_wall_time(folder, 8.0, 0.7, reused=(84, 2700.0))  # warm: an earlier run's models
    assert scale.read_scale(folder) == {"total_seconds": 908.0, "executions": 3, "seconds": 8.0,
                                        "host_reference_s": 0.7, "reused_artifacts": 84,
                                        "reused_build_seconds": 2700.0}
    table = summary.what_ran_table(summary.collect(_summary_config()), chapter)["main"]
    assert table[summary.WALL_TIME_ROW] == "8.0 s"
    assert table[summary.TOTAL_TIME_ROW] == "15 min 08 s (3 executions)"
    assert table[summary.REUSED_ROW] == "84 (45 min 00 s, one process each)"


def test_the_host_reference_is_measured_once_on_one_thread():
    import torch

    threads = torch.get_num_threads()
    first = scale.host_reference_seconds()
    assert first > 0 and scale.host_reference_seconds() == first  # once per process
    assert torch.get_num_threads() == threads  # restored after its one-thread workload


def test_wall_time_reads_at_every_scale():
    assert [summary.wall_time(s) for s in (8.26, 125, 3725)] == ["8.3 s", "2 min 05 s", "1 h 02 min"]


def test_a_changed_input_file_changes_only_the_key_of_the_notebook_reading_it(results):
    chapter = config.notebook_names()[0]
    before = {nb: runner.key_of("smoke", nb, "main") for nb in (chapter, summary.Config.NOTEBOOK)}
    folder = _write_run(results, chapter, "main")
    first = runner.key_of("smoke", summary.Config.NOTEBOOK, "main")
    assert first != before[summary.Config.NOTEBOOK]
    assert runner.key_of("smoke", chapter, "main") == before[chapter]
    frame = pd.read_csv(folder / "claims.csv")
    frame.loc[0, "effect"] = 9.5
    frame.to_csv(folder / "claims.csv", index=False)
    second = runner.key_of("smoke", summary.Config.NOTEBOOK, "main")
    assert second != first
    scale.record_wall_time(results / "smoke" / summary.Config.NOTEBOOK / "main", 3.0, 1.0)  # its own
    (results / "cpu" / chapter / "main").mkdir(parents=True)  # another profile
    (results / "cpu" / chapter / "main" / "claims.csv").write_text("claim\n")
    assert runner.key_of("smoke", summary.Config.NOTEBOOK, "main") == second


def test_code_is_collapsed_except_the_parameters():
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# T"),
        nbformat.v4.new_code_cell("a = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("b = 2"),
        nbformat.v4.new_code_cell("c = 3", metadata={"tags": ["remove-input"]}),
        nbformat.v4.new_code_cell("d = 4", metadata={"tags": ["hide-output"]})])
    runner._collapse_code(nb)
    assert [c.metadata.get("tags") for c in nb.cells] == [
        None, ["parameters"], ["hide-input"], ["remove-input"], ["hide-output", "hide-input"]]


# ----------------------------------------------------------------------------- the smoke book


def _text(html_file):
    return html_file.read_text()


def _claims_files(root):
    return sorted((root / "results" / "smoke").glob("*/*/claims.csv"))


def _chapters_with_claims(root):
    return sorted({path.parts[-3] for path in _claims_files(root)})


def _effects(path):
    """How the pages print each tested claim's effect (``claims.claims_table``)."""
    digits = config.load_config("smoke", summary.Config.NOTEBOOK, "main").digits
    shown = claims.claims_table(claims.read_claims(path), digits)
    return [e.split(" [")[0] for e in shown["effect [95 % CI]"] if e != "—"]


def _relative_links_resolve(page):
    for href in re.findall(r'href="([^"#:]+\.html)(?:#[^"]*)?"', _text(page)):
        assert (page.parent / href).resolve().exists(), f"{page.name} links to missing {href}"


@pytest.mark.slow
def test_the_smoke_book_shows_the_summary_and_each_chapters_claims_and_scale(smoke_book):
    html = smoke_book / "_build" / "html"
    assert _claims_files(smoke_book), "no smoke run wrote a claims.csv"
    intro, own = _text(html / "intro.html"), _text(html / "runs" / "99_summary" / "main.html")
    for path in _claims_files(smoke_book):
        notebook = path.parts[-3]
        chapter = _text(html / "chapters" / f"{notebook}.html")
        for effect in _effects(path):
            assert effect in chapter, f"chapter {notebook} does not show its claims table"
            assert effect in intro and effect in own
    for page in (html / "intro.html", *(html / "chapters").glob("*.html")):
        _relative_links_resolve(page)
    for notebook in (n for n in config.notebook_names() if n != summary.Config.NOTEBOOK):
        chapter = _text(html / "chapters" / f"{notebook}.html")
        assert summary.WALL_TIME_ROW in chapter and "test images per target" in chapter, \
            f"chapter {notebook} has no what-ran table"


@pytest.mark.slow
def test_a_changed_claim_shows_on_its_chapter_page_and_in_the_summary(smoke_book, tmp_path):
    root = tmp_path / "study"
    shutil.copytree(smoke_book, root, ignore=shutil.ignore_patterns("_build"), symlinks=True)
    changed = {}
    for i, notebook in enumerate(_chapters_with_claims(root)):
        path = next(p for p in _claims_files(root) if p.parts[-3:-1] == (notebook, "main"))
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        row = next(r for r, verdict in enumerate(frame.verdict) if verdict != claims.NOT_TESTABLE)
        frame.loc[row, "effect"] = str(9001.3 + i)
        frame.to_csv(path, index=False)
        changed[notebook] = f"+{9001.3 + i:.1f}"
    assert changed, "no smoke run wrote a claims.csv"
    rerun = run_all(root, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"[run ] {summary.Config.NOTEBOOK}/main" in rerun.stdout
    assert rerun.stdout.count("[run ]") == 1, "only the summary reads the claims"
    build_book(root)
    html = root / "_build" / "html"
    for notebook, value in changed.items():
        assert value in _text(html / "chapters" / f"{notebook}.html"), notebook
        assert value in _text(html / "intro.html") and value in _text(html / "runs" / "99_summary" / "main.html")


_LEAKS = [re.compile(p) for p in (r"\b\w*Warning\b", r"No CUDA runtime", r"IPKernelApp",
                                  r"/tmp/", r"site-packages", r"\.venv/")]


@pytest.mark.slow
def test_the_smoke_book_shows_no_path_and_no_warning(smoke_book):
    leaks = [*_LEAKS, re.compile(re.escape(str(REPO))), re.compile(re.escape(str(smoke_book)))]
    found = {}
    for page in (smoke_book / "_build" / "html").rglob("*.html"):
        text = _text(page)
        hits = [m.group(0) for pattern in leaks for m in pattern.finditer(text)]
        if hits:
            found[str(page.relative_to(smoke_book))] = sorted(set(hits))[:5]
    assert not found, f"pages show paths or warnings: {json.dumps(found)}"


@pytest.mark.slow
def test_the_prose_of_the_pages_names_what_is_missing_instead_of_printing_nan(smoke_book):
    """A glued NaN reads "nan" in a sentence (chapter 2 once said its budget curve reached zero
    at "nan epochs"). The smoke runs leave many values undefined (one seed, no block cut), so
    their pages show whether every sentence says what is missing instead. Tables are exempt."""
    html = smoke_book / "_build" / "html"
    found = {}
    for page in (html / "intro.html", *(html / "chapters").glob("*.html")):
        prose = re.sub(r"<[^>]+>", " ", re.sub(r"<table.*?</table>", "", _text(page), flags=re.S))
        hits = re.findall(r"(?<![\w.])[+-]?nan\b", prose, flags=re.I)
        if hits:
            found[page.name] = hits
    assert not found, f"pages print a missing number: {found}"
