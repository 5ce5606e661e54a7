import pytest
import torch
from helpers import tiny_model, toy_dataset

from tl_multineuron import (
    AnalysisConfig,
    MultiNeuronError,
    RecordingConfig,
    SharingStats,
    analyze,
    categorize_acts,
    iter_dataset,
    record,
    tokenize,
)


@pytest.fixture(scope="module", params=["gelu", "gated"])
def model(request):
    return tiny_model(request.param)


def _cache(model, prompt):
    toks = tokenize(model, [prompt]).tokens
    _, cache = model.run_with_cache(toks, names_filter=lambda n: n.endswith("mlp.hook_post"))
    return torch.stack([cache[f"blocks.{x}.mlp.hook_post"][0] for x in range(model.cfg.n_layers)])


def test_last_token_matches_run_with_cache(model):
    prompts = ["hello world", "hi", "a much longer prompt here"]
    acts = record(model, tokenize(model, prompts))
    assert acts.shape == (3, model.cfg.n_layers, model.cfg.d_mlp)
    for i, p in enumerate(prompts):
        full = _cache(model, p)  # [layer, pos, d_mlp]
        torch.testing.assert_close(acts[i], full[:, -1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("agg", ["mean", "max", "any"])
@pytest.mark.parametrize("crit", ["gt", "abs"])
def test_all_token_aggregation(model, agg, crit):
    prompts = ["hello world", "hi"]
    cfg = RecordingConfig(token="all", aggregate=agg, criterion=crit)
    acts = record(model, tokenize(model, prompts), cfg)
    for i, p in enumerate(prompts):
        full = _cache(model, p)[:, 1:]  # BOS skipped
        if agg == "mean":
            want = full.mean(1)
        elif agg == "max" or crit == "gt":
            want = full.max(1).values
        else:
            want = full.gather(1, full.abs().argmax(1, keepdim=True)).squeeze(1)
        torch.testing.assert_close(acts[i], want, rtol=1e-5, atol=1e-5)


def test_batched_equals_one_at_a_time(model):
    ds = toy_dataset(5)
    batched = torch.cat([a for _, a in iter_dataset(model, ds, batch_size=3)])
    single = torch.cat([a for _, a in iter_dataset(model, ds, batch_size=1)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


def test_layers_subset_and_other_hook(model):
    cfg = RecordingConfig(hook="mlp.hook_pre", layers=(1,))
    acts = record(model, tokenize(model, ["hello"]), cfg)
    toks = tokenize(model, ["hello"]).tokens
    _, cache = model.run_with_cache(toks)
    torch.testing.assert_close(acts[0, 0], cache["blocks.1.mlp.hook_pre"][0, -1])


def test_hooks_removed_after_record_and_after_error(model):
    def n_hooks():
        return sum(len(hp._forward_hooks) for hp in model.hook_dict.values())

    before = n_hooks()
    record(model, tokenize(model, ["hello"]))
    assert n_hooks() == before
    with pytest.raises(MultiNeuronError):
        record(model, tokenize(model, ["hello"]), RecordingConfig(hook="hook_resid_post"))
    assert n_hooks() == before


def test_bad_hook_and_layers(model):
    with pytest.raises(MultiNeuronError, match="no hook named 'blocks.0.mlp.nope'"):
        record(model, tokenize(model, ["x"]), RecordingConfig(hook="mlp.nope"))
    with pytest.raises(MultiNeuronError, match="expected \\[batch, pos, d_mlp"):
        record(model, tokenize(model, ["x"]), RecordingConfig(hook="hook_resid_post"))
    with pytest.raises(MultiNeuronError, match="layer\\(s\\) \\[5\\] do not exist"):
        record(model, tokenize(model, ["x"]), RecordingConfig(layers=(5,)))
    with pytest.raises(MultiNeuronError, match="suffix"):
        RecordingConfig(hook="blocks.0.mlp.hook_post")


def test_prompt_longer_than_context_names_item_and_language(model):
    ds = toy_dataset(2)
    long = type(ds)(
        (ds[0], type(ds[1])("long", {x: "y" * 100 for x in ds.languages}, {}, "toy")), ds.languages
    )
    with pytest.raises(MultiNeuronError, match="item 'long', language 'en'.*longer than"):
        list(iter_dataset(model, long))


def test_duck_typed_model_without_mlp():
    class NotAModel:
        cfg = type("C", (), {"n_layers": 2, "d_mlp": None})()

        def run_with_hooks(self):
            pass

        def hooks(self):
            pass

    with pytest.raises(MultiNeuronError, match="d_mlp"):
        analyze(NotAModel(), toy_dataset(2))
    with pytest.raises(MultiNeuronError, match="lacks"):
        analyze(object(), toy_dataset(2))


def test_analyze_equals_manual_categorization(model):
    ds = toy_dataset(6, ("en", "de", "fr", "ja"))
    cfg = AnalysisConfig(thresholds=(0.0, 0.1, 0.5), batch_size=4)
    res = analyze(model, ds, cfg, keep_items=True)
    acts = torch.cat([a for _, a in iter_dataset(model, ds, batch_size=6)])
    want = categorize_acts(acts, 0.0, "gt", ds.languages)
    assert torch.equal(res.categories.codes, want.codes)
    assert torch.equal(res.categories.specific_lang, want.specific_lang)
    assert res.item_ids == tuple(i.item_id for i in ds)
    ref = SharingStats(ds.languages, (0.0, 0.1, 0.5), "gt", model.cfg.n_layers, model.cfg.d_mlp)
    ref.update(acts)
    assert torch.equal(ref.category_counts, res.stats.category_counts)
    assert res.stats.meta["site"] == "blocks.{layer}.mlp.hook_post"
    # a sweep is one pass: stats at 0.1 equal a separate run at 0.1
    one = analyze(model, ds, AnalysisConfig(thresholds=(0.1,)))
    assert torch.equal(one.stats.category_counts[0], res.stats.category_counts[1])


def test_analyze_resume_equals_one_run(model):
    ds = toy_dataset(7)
    cfg = AnalysisConfig(batch_size=2)
    whole = analyze(model, ds, cfg).stats
    part = analyze(model, ds.head(4), cfg).stats
    rest = analyze(model, ds, cfg, stats=part.copy(), start=4).stats
    assert rest.n_items == 7
    assert torch.equal(rest.category_counts, whole.category_counts)
    torch.testing.assert_close(rest.act_sum, whole.act_sum)


def test_config_roundtrip():
    cfg = AnalysisConfig(
        (0.0, 0.2), "abs", RecordingConfig(token="all", aggregate="any", layers=(2, 0)), 3
    )
    assert AnalysisConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.recording.criterion == "abs" and cfg.recording.layers == (0, 2)
    with pytest.raises(MultiNeuronError):
        AnalysisConfig(batch_size=0)
    with pytest.raises(MultiNeuronError):
        AnalysisConfig(thresholds=(0.1, 0.1))
