"""Claims (ii) and (iii) and the `paper` command: per-row attribution, the split by correctness,
the association, and the whole run with its report on a tiny model."""

import json
import os

import pandas as pd
import pytest
import torch
from helpers import chromium, tiny_llama_dir

from tl_multineuron.attribution.correctness import correctness_split, peak_table
from tl_multineuron.attribution.rows import RowAttribution
from tl_multineuron.attribution.stats import ScoreStats
from tl_multineuron.cli import build_parser, main
from tl_multineuron.sharing.association import association, shared_measures
from tl_multineuron.sharing.classification import categorize
from tl_multineuron.sharing.item_summaries import ItemSummaries

LANGS = ("en", "de")


def test_per_row_attribution_sums_and_merges():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 2, 2, 10, generator=g)  # item, lang, layer, neuron
    codes = torch.randint(0, 4, (3, 2, 10), generator=g)

    def fresh():
        return ScoreStats("contribution", LANGS, (0, 1), 3, rows=RowAttribution(LANGS, (0, 1), 3))

    one = fresh()
    one.update(scores, codes, ["a", "b", "c"])
    rows = one.rows
    assert (rows.topk.sum(-1) == 3).all()  # every row's top-3 falls in some category
    torch.testing.assert_close(rows.mass.sum(-1), scores.double().abs().sum(-1))
    # per-row sums add up to the pooled statistics
    assert torch.equal(rows.topk.sum(0).long(), one.topk_counts)
    a, b = fresh(), fresh()
    a.update(scores[:1], codes[:1], ["a"])
    b.update(scores[1:], codes[1:], ["b", "c"])
    merged = a.merge(b)
    assert merged.rows.equals(one.rows)
    back = ScoreStats.from_state(one.state())
    assert back.equals(one) and back.rows.equals(one.rows)


def _rows_by_hand():
    """Two items x 2 languages, 1 layer, K = 2: all-shared holds both top-K slots on correct
    rows and none on incorrect ones."""
    topk = torch.zeros(2, 2, 1, 4, dtype=torch.int32)
    mass = torch.zeros(2, 2, 1, 4, dtype=torch.float64)
    topk[0, 0, 0, 3] = 2  # item a, en: correct
    topk[0, 1, 0, 0] = 2  # item a, de: incorrect
    topk[1, 0, 0, 3] = 2  # item b, en: correct
    topk[1, 1, 0, 1] = 2  # item b, de: incorrect
    mass[..., 3] = torch.tensor([[[3.0], [1.0]], [[3.0], [1.0]]])
    mass[..., 0] = 1.0
    peak = torch.full((2, 2, 1, 4), float("-inf"), dtype=torch.float64)
    peak[:, :, 0, 3] = torch.tensor([[0.5, 0.1], [0.3, 0.1]])
    return RowAttribution(LANGS, (0,), 2, ["a", "b"], topk, mass, peak)


OUTCOME = pd.DataFrame(
    {
        "item_id": ["a", "a", "b", "b"],
        "language": ["en", "de", "en", "de"],
        "greedy_match": [True, False, True, False],
        "logprob": [-0.1, -3.0, -0.2, -2.5],
    }
)


def test_correctness_split_by_hand():
    t = correctness_split(_rows_by_hand(), OUTCOME, "contribution", n_boot=100)
    r = t[(t.language == "all") & (t.category == "all-shared") & (t.measure == "topk_share")]
    assert r[["correct", "incorrect", "diff"]].values.tolist() == [[1.0, 0.0, 1.0]]
    assert r.ci_low.item() == pytest.approx(1.0) and (r.n_correct == 2).all()
    m = t[(t.language == "en") & (t.category == "all-shared") & (t.measure == "mass_share")]
    assert m.correct.item() == pytest.approx(0.75) and pd.isna(m.incorrect.item())
    p = peak_table(_rows_by_hand())
    en = p[(p.language == "en") & (p.layer.astype(str) == "0") & (p.category == "all-shared")]
    assert en.mean_of_item_max.item() == pytest.approx(0.4)  # (0.5 + 0.3) / 2
    none = p[(p.language == "en") & (p.layer.astype(str) == "0") & (p.category == "specific")]
    assert none.mean_of_item_max.item() == 0.0  # no specific neuron: 0, as the authors


def test_association_by_hand():
    # item a shares 3 of 4 neurons, item b 1 of 4; de is active on fewer neurons in item b
    active = torch.tensor(
        [
            [[[1, 1, 1, 0]], [[1, 1, 1, 1]]],  # a: en 3 active, de 4 -> all-shared 3
            [[[1, 0, 0, 0]], [[1, 1, 1, 1]]],  # b: en 1, de 4 -> all-shared 1
        ],
        dtype=torch.bool,
    ).unsqueeze(0)
    items = ItemSummaries(LANGS, (0.0,), 1, 4)
    items.update(active, categorize(active, LANGS).codes, ["a", "b"])
    m = shared_measures(items)
    assert m[0].tolist() == [[0.75, 0.75], [0.25, 0.25]]
    assert m[1].tolist() == [[1.0, 0.75], [1.0, 0.25]]
    outcome = OUTCOME.assign(greedy_match=[True, True, False, False], logprob=[-1, -1, -2, -2])
    t = association(items, outcome, n_boot=200).set_index(["language", "measure", "outcome"])
    r = t.loc[("all", "all_shared_fraction", "greedy_match")]
    assert r.r == pytest.approx(1.0) and r.mean_correct == 0.75 and r.mean_incorrect == 0.25
    assert r.n_rows == 4 and r.n_items == 2
    # within en the shared share is 1.0 for both items: no variance, no correlation
    assert pd.isna(t.loc[("en", "shared_share", "logprob")].r)


SMALL = ["--eval-items", "4", "--calibration", "6", "--seeds", "0,1", "--allow-empty"]


def test_paper_sizes_its_controls_apart_from_grid():
    """paper: 4 draws of each all-shared control, one per new category, amplify x2; grid keeps
    its 5 seeds (the flags still set any of them)."""
    paper = build_parser("paper").parse_args(["paper", "--out", "x"])
    grid = build_parser("grid").parse_args(["grid", "--out", "x"])
    assert (paper.seeds, grid.seeds) == ("0,1,2,3", "0,1,2,3,4")
    again = build_parser("paper").parse_args(["paper", "--out", "x", "--seeds", "0,1,2,3,4"])
    assert again.seeds == "0,1,2,3,4"


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    # gated: few neurons sit below 0 on every item, so equal-size controls exist
    hf = tiny_llama_dir(root / "model", intermediate=96, n_positions=1024)
    out = root / "run"
    args = ["paper", "--tasks", "facts,translate_xx_en", "--model", hf, "--out", str(out)]
    assert main([*args, *SMALL, "--no-progress"]) == 0
    return out


def test_paper_command_writes_every_claim_and_the_report(paper_run):
    d = paper_run / "paper"
    for name in ("claim_i_tasks.csv", "claim_i_inputs.csv", "claim_ii.csv", "claim_iii.csv",
                 "effective_peaks.csv", "language_similarity.csv", "paper.json"):  # fmt: skip
        assert (d / name).exists(), name
    heads = json.loads((d / "paper.json").read_text())["headlines"]
    assert set(heads) == {"i", "ii", "iii", "similarity"} and all(heads.values())
    assert heads["i"][0].startswith("Tasks differ:") and "[" in heads["i"][0]
    # every category deactivated, each with its own controls
    groups = set(pd.read_csv(paper_run / "facts" / "scores.csv").group)
    assert {
        "deactivate partial-shared (static, last)",
        "deactivate non-activated (static, last)",
        "deactivate matched of partial-shared (static, last)",
        "deactivate random of non-activated (static, last)",
    } <= groups
    assert "amplify x1.5 all-shared (static, last)" not in groups  # the paper run: x2 only
    for t in ("facts", "translate_xx_en"):
        assert (paper_run / t / "language_pairs.csv").exists()
    html = (paper_run / "report.html").read_text()
    for title in ("Claim (i)", "Claim (ii)", "Claim (iii)", "Which languages share"):
        assert title in html


@pytest.mark.browser
@pytest.mark.skipif(
    chromium() is None and not os.environ.get("CI"),
    reason="Debian chromium not installed (.ci/run installs it; under CI it must be there)",
)
def test_paper_report_in_headless_chromium(paper_run):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium(), args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((paper_run / "report.html").as_uri())
            assert errors == []
            heads = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
            claims = [h for h in heads if h.startswith(("Claim", "Which languages share"))]
            assert [c.split(":")[0] for c in claims] == [
                "Claim (i)", "Claim (ii)", "Claim (iii)", "Which languages share",
            ]  # fmt: skip
            text = page.inner_text("body")
            # each claim section opens with its statistic
            assert text.index("Tasks differ:") < text.index("Claim (ii)")
            assert "correct vs incorrect rows" in text and "Mantel" in text
            widths = page.evaluate("[...document.images].map(i => i.naturalWidth)")
            assert widths and min(widths) > 100
        finally:
            browser.close()
