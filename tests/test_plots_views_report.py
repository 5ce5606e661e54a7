import json
import os

import pandas as pd
import pytest
import torch
from helpers import chromium, seeded_acts, tiny_model, toy_dataset

import tl_multineuron as tlm
from tl_multineuron import MultiNeuronError
from tl_multineuron.attribution.analysis import AttributionConfig, attribute
from tl_multineuron.report import plots
from tl_multineuron.report.page import build_report
from tl_multineuron.sharing.views import (
    colored_tokens_view,
    load_views,
    neuron_activation_view,
    render_views,
    save_views,
    views_page,
)

LANGS = ("en", "de", "fr")


@pytest.fixture(scope="module")
def stats():
    s = tlm.SharingStats(LANGS, (0.0, 0.2, 0.4), "gt", 3, 16, meta={"dataset": "toy"})
    s.update(seeded_acts((6, 3, 3, 16)))
    return s


@pytest.fixture(scope="module")
def attr():
    model = tiny_model("gated")
    return attribute(
        model,
        toy_dataset(3, LANGS),
        AttributionConfig(methods=("contribution", "effective", "ig"), k=4, ig_steps=4),
    ).stats


def _comparisons():
    rows = []
    for cond, ref, target in (
        ("deactivate all-shared (static, last)", "none", "all-shared"),
        ("deactivate random (static, last)", "none", "random"),
        ("deactivate all-shared (static, last)", "deactivate random (static, last)", "all-shared"),
    ):
        for metric in ("accuracy", "logprob"):
            rows.append(
                {
                    "task": "toy",
                    "condition": cond,
                    "reference": ref,
                    "metric": metric,
                    "value": 10.0,
                    "reference_value": 20.0,
                    "delta": -10.0,
                    "ci_low": -14.0,
                    "ci_high": -6.0,
                    "p_value": 0.001,
                    "n_rows": 30,
                    "target": target,
                }
            )
    return pd.DataFrame(rows)


def test_every_figure_draws_and_saves(stats, attr, tmp_path):
    figs = [
        plots.plot_layer_fractions(stats),
        plots.plot_task_comparison({"a": stats, "b": stats}),
        plots.plot_threshold_sweep(stats),
        plots.plot_stability(stats),
        plots.plot_specific_per_language(stats),
        plots.plot_topk_share(attr, "contribution"),
        plots.plot_score_by_category(attr, "effective"),
        plots.plot_attribution_mass(attr, "ig"),
        plots.plot_intervention_effects(_comparisons()),
        plots.plot_intervention_effects(_comparisons(), "logprob", "random"),
    ]
    for i, f in enumerate(figs):
        for ext in ("png", "svg"):
            p = plots.save_figure(f, tmp_path / f"f{i}.{ext}")
            assert p.stat().st_size > 1000
    # the stacked bars add up to 100% per layer
    ax = figs[0].axes[0]
    heights = torch.tensor([[b.get_height() for b in c] for c in ax.containers])
    torch.testing.assert_close(heights.sum(0), torch.full((3,), 100.0, dtype=heights.dtype))
    with pytest.raises(MultiNeuronError, match="format"):
        plots.save_figure(figs[0], tmp_path / "f.gif")
    with pytest.raises(MultiNeuronError, match="lack columns"):
        plots.plot_intervention_effects(pd.DataFrame({"x": [1]}))
    with pytest.raises(MultiNeuronError, match="no accuracy comparisons"):
        plots.plot_intervention_effects(_comparisons(), reference="matched")


def test_views_are_data_and_render_offline(tmp_path):
    v = neuron_activation_view(
        {"en": ["a", "b"], "de": ["c"]},
        {"en": torch.ones(2, 1, 2), "de": torch.zeros(1, 1, 2)},
        ["L0"],
        ["n1", "n2"],
        "t",
    )
    assert v.props["tokens"][0][0] == "[en] " and len(v.props["activations"][1]) == 2
    save_views([v], tmp_path / "v.json")
    assert load_views(tmp_path / "v.json")[0] == v
    html = render_views([v, colored_tokens_view(["x"], torch.ones(1, 2), ["a", "b"])])
    assert html.count("CircuitsVis.render(") == 2 and "unpkg" not in html.lower()
    assert html.count("</script>") == 3  # the bundle once, then one call per view
    with pytest.raises(MultiNeuronError, match="tokens"):
        neuron_activation_view({"en": ["a"]}, {"en": torch.ones(2, 1, 1)}, ["L"], ["n"])
    assert "<h1>" in views_page([v])


def test_report_renders_what_exists_and_names_what_is_missing(stats, attr, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    page = build_report(empty).read_text()
    for what in ("stats.pt", "attribution.pt", "comparisons.csv", "views.json", "run*.json"):
        assert what in page
    d = tmp_path / "full"
    d.mkdir()
    stats.save(d / "stats.pt")
    attr.save(d / "attribution.pt")
    _comparisons().to_csv(d / "comparisons.csv", index=False)
    (d / "run.json").write_text(json.dumps({"identity": {"model": "m"}, "n_items": 10}))
    page = build_report(d).read_text()
    assert page.count("data:image/png;base64,") >= 10
    assert "Partial results: 6 of 10 items" in page
    assert "http://" not in page and "https://" not in page.replace("https://www.w3.org", "")
    # an older-format file: the report says so and renders the rest
    st = torch.load(d / "stats.pt", weights_only=True)
    st["format_version"] = 0
    torch.save(st, d / "stats.pt")
    page = build_report(d).read_text()
    assert "could not be read" in page and "format version 0" in page
    assert "Attribution" in page and page.count("data:image/png;base64,") >= 6
    with pytest.raises(MultiNeuronError, match="does not exist"):
        build_report(tmp_path / "nope")


@pytest.mark.browser
@pytest.mark.skipif(
    chromium() is None and not os.environ.get("CI"),
    reason="Debian chromium not installed (.ci/run installs it; under CI it must be there)",
)
def test_report_in_headless_chromium(stats, attr, tmp_path):
    from playwright.sync_api import sync_playwright

    d = tmp_path / "run"
    d.mkdir()
    stats.save(d / "stats.pt")
    attr.save(d / "attribution.pt")
    _comparisons().to_csv(d / "comparisons.csv", index=False)
    v = neuron_activation_view(
        {x: ["a", "b"] for x in LANGS},
        {x: torch.rand(2, 2, 3) for x in LANGS},
        ["L0", "L1"],
        ["n0", "n1", "n2"],
        "view",
    )
    save_views([v], d / "views.json")
    report = build_report(d)
    (d / "views.html").write_text(views_page([v]))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium(),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            for path in (report, d / "views.html"):
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                errors: list[str] = []
                requests: list[str] = []

                def on_console(m, errors=errors):
                    if m.type == "error":
                        errors.append(m.text)

                page.on("console", on_console)
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.on("request", lambda r, requests=requests: requests.append(r.url))
                page.goto(path.as_uri())
                page.wait_for_selector(".cv-widget select", timeout=15000)
                assert errors == [], errors
                assert requests == [path.as_uri()], requests  # nothing but the file itself
                n_tokens = page.evaluate(
                    "document.querySelector('.cv-widget').innerText.split('[').length - 1"
                )
                assert n_tokens == len(LANGS)  # one row per language
                shot = d / f"{path.stem}.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
        finally:
            browser.close()


def _specificity_dir(tmp_path):
    """A specificity run's files (hand-made rows, the real tables): one method with sets,
    one that found nothing, the all-shared set."""
    import json

    from tl_multineuron.experiments.specificity import matrix_table, selectivity

    rows = []
    for k in range(6):
        for y in ("en", "de", "ja"):
            base = {"item_id": f"i{k}", "language": y, "n_tokens": 10}
            rows.append({**base, "method": "none", "set_language": "-", "control": "none",
                         "seed": -1, "set_size": 0, "mean_ll": -2.0 - 0.1 * k})  # fmt: skip
            for x in ("en", "de", "ja"):
                for control, seed, eff in (("set", -1, 0.4), ("random", 0, 0.05),
                                           ("matched", 0, 0.1)):  # fmt: skip
                    rows.append({**base, "method": "magnitude", "set_language": x,
                                 "control": control, "seed": seed, "set_size": 3,
                                 "mean_ll": -2.0 - 0.1 * k - (eff if x == y else 0.05)
                                 - 0.01 * (k % 2)})  # fmt: skip
            for control, seed in (("set", -1), ("random", 0)):
                rows.append({**base, "method": "all-shared", "set_language": "-",
                             "control": control, "seed": seed, "set_size": 40,
                             "mean_ll": -5.0})  # fmt: skip
    rows = pd.DataFrame(rows)
    d = tmp_path / "run" / "specificity"
    d.mkdir(parents=True)
    langs = ["en", "de", "ja"]
    mt = matrix_table(rows, n_boot=200)
    empty = pd.DataFrame([{"method": "lape", "control": "set", "set_language": x, "language": y,
                           "delta": float("nan"), "empty": True, "set_size": 0} for x in langs
                          for y in langs])  # fmt: skip
    pd.concat([mt, empty]).to_csv(d / "matrix.csv", index=False)
    selectivity(rows, n_boot=200, languages=langs).to_csv(d / "selectivity.csv", index=False)
    sizes = [{"method": m, "language": x, "layer": 0, "size": 3 * (m == "magnitude")}
             for m in ("magnitude", "lape") for x in langs]  # fmt: skip
    pd.DataFrame(sizes).to_csv(d / "sets.csv", index=False)
    pd.DataFrame([{"language": x, "mean": 0.3, "share_one": 0.0, "activation_bar": 0.7,
                   "set_size": 0} for x in langs]).to_csv(d / "lape_probabilities.csv",
                                                          index=False)  # fmt: skip
    ident = {"model": "tiny", "dataset": "facts", "languages": langs,
             "specificity": {"unit": "token", "equal_size": True, "eval_items": 6}}  # fmt: skip
    (d / "run-specificity.json").write_text(json.dumps({"identity": ident, "commit": "x",
                                                        "eval_items": ["a", "b", 6]}))  # fmt: skip
    return d.parent


def test_specificity_report_leads_with_the_answer(tmp_path):
    """A specificity run alone: no missing-files box, no empty sections; the selectivity
    figure first, a sentence for the method that found nothing and for the all-shared set,
    sizes named by method, the long table folded."""
    page = build_report(_specificity_dir(tmp_path)).read_text()
    body = page[page.index("Language specificity") :]
    assert "Missing or unreadable" not in page and 'class="missing"' not in page
    for absent in ("Neuron categories", "Attribution", "Interventions"):
        assert absent not in page
    first_img = body.index("data:image/png;base64,")
    assert body.index("Selectivity: own-language") < first_img < body.index("lape: no neuron")
    assert "All-shared set (40 neurons) deactivated" in body
    assert body.count("data:image/png;base64,") == 2  # selectivity + the magnitude matrix
    sizes = body[body.index("Set sizes per method") :]
    assert "<td>magnitude</td>" in sizes and "<td>lape</td>" in sizes
    assert "<details><summary>All selectivity rows" in body
    assert body.index("activation probabilities (share") < body.index("<details>")


@pytest.mark.browser
@pytest.mark.skipif(
    chromium() is None and not os.environ.get("CI"),
    reason="Debian chromium not installed (.ci/run installs it; under CI it must be there)",
)
def test_specificity_report_in_headless_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    report = build_report(_specificity_dir(tmp_path))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox",
                                     "--disable-gpu", "--no-first-run"])  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report.as_uri())
            assert errors == []
            text = page.inner_text("body")
            assert "Missing or unreadable" not in text
            assert text.index("Selectivity: own-language") < text.index("Set sizes per method")
            # the selectivity figure is the first image and is drawn (not a broken image)
            w = page.evaluate("document.images[0].naturalWidth")
            assert w > 200
            assert not page.is_visible("details table")  # folded until clicked
            page.click("details summary")
            assert page.is_visible("details table")
        finally:
            browser.close()
