"""LAPE as its authors run it: the selection of identify.py on activation probabilities,
checked against a hand derivation, and its *.neuron.pth file format both ways."""

from __future__ import annotations

import pytest
import torch

import tl_multineuron as tlm
from tl_multineuron.experiments.language_sets import LanguageSets

# [lang, layer=1, neuron=8]: the probabilities of the hand derivation below
P = torch.tensor(
    [
        #  n0   n1   n2   n3   n4   n5    n6   n7
        [0.9, 0.0, 0.5, 0.6, 0.0, 0.05, 0.1, 0.2],  # lang 0
        [0.0, 0.8, 0.5, 0.3, 0.0, 0.0, 0.1, 0.0],  # lang 1
        [0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.7, 0.2],  # lang 2
    ]
).unsqueeze(1)


def _sets(masks):
    return [sorted(m[0].nonzero().flatten().tolist()) for m in masks]


def test_lape_selection_by_hand():
    """24 probabilities sorted: 11 zeros, 0.05, 0.1, 0.1, 0.2, 0.2, 0.3, 0.5 x3, 0.6, 0.7,
    0.8, 0.9. filter_rate 0.75: the 18th smallest, 0.5; a neuron needs some p > 0.5 (strict:
    n2's 0.5 does not pass), so n0, n1, n3, n6 keep their entropy (0, 0, H(2/3, 1/3) = 0.637,
    H(1/9, 1/9, 7/9) = 0.684) and the rest get inf. top_rate 0.25: round(8 * 0.25) = 2
    lowest: n0 and n1. bar (0.75): 0.5 again; n0 is lang 0's (0.9), n1 lang 1's (0.8)."""
    masks, ent = tlm.lape_select(P, top_rate=0.25, filter_rate=0.75, activation_bar_ratio=0.75)
    assert _sets(masks) == [[0], [1], []]
    assert ent[0, 0] == 0 and ent[0, 4] == 0  # 0/0 normalised to 0: entropy 0, before filter
    torch.testing.assert_close(float(ent[0, 3]), 0.6365141682948128, rtol=1e-6, atol=0)
    # three picked: n3 (0.637) before n6 (0.684); lang 0's 0.6 > 0.5
    masks, _ = tlm.lape_select(P, top_rate=0.375, filter_rate=0.75, activation_bar_ratio=0.75)
    assert _sets(masks) == [[0, 3], [1], []]
    # all 8 picked, the filtered (inf) ones too, as identify.py does; bar (0.5): the 12th
    # smallest, 0.05: strictly above it n2 everywhere, n7 in langs 0 and 2, not n5's 0.05
    masks, _ = tlm.lape_select(P, top_rate=1.0, filter_rate=0.75, activation_bar_ratio=0.5)
    assert _sets(masks) == [[0, 2, 3, 6, 7], [1, 2, 3, 6], [2, 6, 7]]


def test_lape_ties_follow_topk_on_the_layer_major_order():
    """Equal entropies: which neurons make the cut is torch's ``topk(largest=False)`` on the
    [layer, neuron] flattening, as in identify.py (here: the two zero-entropy neurons of
    layer 0 are found, whatever layer 1 holds)."""
    p = torch.zeros(2, 2, 4)
    p[0, 0, 0] = p[1, 0, 1] = p[0, 1, 2] = p[1, 1, 3] = 0.9  # four one-language neurons
    masks, ent = tlm.lape_select(p, top_rate=0.25, filter_rate=0.5, activation_bar_ratio=0.5)
    order = ent.clone()
    order[(p.permute(1, 2, 0) > 0).sum(-1) == 0] = torch.inf
    want = order.flatten().topk(2, largest=False).indices
    got = masks.any(0).flatten().nonzero().flatten()
    assert sorted(got.tolist()) == sorted(want.tolist())


def _identify_reference(over_zero, n, top_rate, filter_rate, bar_ratio):
    """A step-by-step re-statement of ``activation()`` in RUCAIBox/Language-Specific-Neurons'
    ``identify.py`` (written for this test; that repository has no licence to copy from): the
    statistics stacked language-last and contiguous, integer division to float32, entropy over
    the last dim, the two ``kthvalue`` bars, ``topk(largest=False)`` over the flattened
    entropies, and the per-language lists of sorted indices per layer its ``torch.save`` writes
    (languages after the last one with a neuron are absent, as ``bincount`` leaves them)."""
    oz = torch.stack(list(over_zero), dim=-1)  # layer x inter x lang
    probs = oz / torch.tensor(n)
    normed = probs / probs.sum(dim=-1, keepdim=True)
    normed[torch.isnan(normed)] = 0
    ent = -torch.sum(normed * torch.where(normed > 0, normed.log(), 0), dim=-1)
    flat = probs.flatten()
    ent[(probs > flat.kthvalue(round(len(flat) * filter_rate)).values.item()).sum(-1) == 0] = (
        torch.inf
    )
    _, index = ent.flatten().topk(round(ent.numel() * top_rate), largest=False)
    rows, cols = index // ent.size(1), index % ent.size(1)
    picked = probs[rows, cols].transpose(0, 1)  # lang x picked
    lang, which = torch.where(picked > flat.kthvalue(round(len(flat) * bar_ratio)).values.item())
    out = []
    for part in which.split(torch.bincount(lang).tolist()):
        pairs = sorted(tuple(x) for x in torch.stack((rows, cols), -1)[part].tolist())
        layers = [[] for _ in range(oz.shape[0])]
        for layer, h in pairs:
            layers[layer].append(h)
        out.append([torch.tensor(h).long() for h in layers])
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lape_equals_identify_py_on_integer_counts(seed, tmp_path):
    """The library's LAPE (token statistics -> selection -> *.neuron.pth) equals identify.py
    step for step on integer ``over_zero`` / ``n``: 6 languages, many exact ties (counts from a
    small range, repeated neurons), neurons that fail the filter, and trailing languages
    without neurons."""
    g = torch.Generator().manual_seed(seed)
    langs, L, D = ("en", "zh", "fr", "es", "vi", "ja"), 3, 40
    n = [1000, 1000, 1000, 1000, 800, 1000]
    # counts from a few values: probabilities equal to both bars, entropies tied at the cut
    oz = torch.tensor([0, 0, 50, 100, 200])[torch.randint(0, 5, (len(langs), L, D), generator=g)]
    oz[:2, :, 30:36] = torch.tensor([800, 700])[:, None, None]  # 18 neurons of one entropy,
    # the lowest but for a few: the cut (12) falls inside them, so topk's tie order decides
    oz[:, :, 36:] = 0  # active in no language: entropy 0 but filtered out
    oz[-2:] = torch.minimum(oz[-2:], torch.tensor(50))  # the last two: below every bar
    stats = tlm.TokenStats(langs, L, D, "hook_post", torch.tensor(n), oz.long())
    sets = tlm.token_language_sets(
        stats, "lape", top_rate=0.1, filter_rate=0.9, activation_bar_ratio=0.9
    )
    sets.save_lape(tmp_path / "lib.neuron.pth")
    got = torch.load(tmp_path / "lib.neuron.pth")
    want = _identify_reference(list(oz), n, 0.1, 0.9, 0.9)
    assert len(want) < len(langs)  # trailing languages without neurons: absent there
    assert [[t.tolist() for t in lang] for lang in got[: len(want)]] == [
        [t.tolist() for t in lang] for lang in want
    ]
    assert all(not t.numel() for lang in got[len(want) :] for t in lang)


def test_lape_file_round_trip_and_the_format(tmp_path):
    masks = torch.zeros(3, 2, 10, dtype=torch.bool)
    masks[0, 0, [7, 1]] = True
    masks[1, 1, 9] = True
    sets = LanguageSets("lape", ("en", "zh", "fr"), masks, masks.float())
    sets.save_lape(tmp_path / "m.neuron.pth")
    raw = torch.load(tmp_path / "m.neuron.pth", weights_only=True)
    assert len(raw) == 3 and all(len(x) == 2 for x in raw)
    assert raw[0][0].tolist() == [1, 7] and raw[0][0].dtype == torch.long
    assert raw[2][1].numel() == 0
    back = tlm.load_lape_sets(tmp_path / "m.neuron.pth", ["en", "zh", "fr"], d_mlp=10)
    assert torch.equal(back.masks, masks) and back.languages == ("en", "zh", "fr")
    # identify.py drops trailing languages without neurons: fewer entries read as empty
    torch.save(raw[:2], tmp_path / "short.pth")
    short = tlm.load_lape_sets(tmp_path / "short.pth", ["en", "zh", "fr"], d_mlp=10)
    assert torch.equal(short.masks, masks)


def test_lape_file_errors_name_file_language_and_layer(tmp_path):
    good = [[torch.tensor([1, 2]), torch.tensor([0])], [torch.tensor([3]), torch.tensor([])]]
    torch.save(good, tmp_path / "g.pth")
    err = tlm.MultiNeuronError
    with pytest.raises(err, match="holds 2 languages but 1 were named"):
        tlm.load_lape_sets(tmp_path / "g.pth", ["en"], d_mlp=8)
    with pytest.raises(err, match=r"language 'zh', layer 0: neuron index 3 outside .* 3 neurons"):
        tlm.load_lape_sets(tmp_path / "g.pth", ["en", "zh"], d_mlp=3)
    with pytest.raises(err, match="language 'en': 2 layers; the model has 4"):
        tlm.load_lape_sets(tmp_path / "g.pth", ["en", "zh"], d_mlp=8, n_layers=4)
    with pytest.raises(err, match="does not exist"):
        tlm.load_lape_sets(tmp_path / "none.pth", ["en"], d_mlp=8)
    torch.save({"not": "a list"}, tmp_path / "d.pth")
    with pytest.raises(err, match="LAPE's format"):
        tlm.load_lape_sets(tmp_path / "d.pth", ["en"], d_mlp=8)
    torch.save([[torch.tensor([0.5])]], tmp_path / "f.pth")
    with pytest.raises(err, match="layer 0: expected a 1-D tensor of neuron indices"):
        tlm.load_lape_sets(tmp_path / "f.pth", ["en"], d_mlp=8)
