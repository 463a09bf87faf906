"""The pooling tournament: a 2-pooler smoke run through the real trainer gives the table and JSON
with finite values (SimPool's parameter count from its closed form), a re-run reuses the finished
results; the ranking and table logic against a hand-made result dict."""

import json
import math
from pathlib import Path

import pytest

from simpool_jax.tools import pooling_tournament
from simpool_jax.tools.tournament_table import COLUMNS, group_of, markdown, ranks, winners

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
WIDTH = 16
# A 1-block ViT of width 16 on 256 images: the whole trainer path in seconds per pooler.
SMOKE = ["--poolers", "gap,simpool", "--steps", "2", "--limit", "256",
         "--set", "model.backbone_kwargs.depth=1", "--set", f"model.backbone_kwargs.width={WIDTH}",
         "--set", "model.backbone_kwargs.num_heads=2", "--set", "tensorboard=False"]


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Fashion-MNIST not installed (setup.sh)")
def test_smoke_run_writes_table_and_json_and_reuses_finished_poolers(tmp_path, capsys):
    argv = ["--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "out"), *SMOKE]
    table = pooling_tournament.main(argv).read_text()
    record = json.loads((tmp_path / "out" / "pooling_tournament.json").read_text())
    results = record["results"]
    assert sorted(results) == ["gap", "simpool"]
    for name, r in results.items():
        assert r["step"] == 2
        assert 0.0 <= r["top1"] <= 100.0
        for key in ("flops", "img_per_s", "train_s", "model_params"):
            assert math.isfinite(r[key]) and r[key] > 0, (name, key)
    assert results["gap"]["iou"] is None and results["gap"]["pooler_params"] == 0
    assert 0.0 <= results["simpool"]["iou"] <= 1.0
    # SimPool: LayerNorm (2 D) + W_Q, W_K (2 D^2), no bias (SIMPOOL.md §1.1).
    assert results["simpool"]["pooler_params"] == 2 * WIDTH**2 + 2 * WIDTH
    # Both models have one final LayerNorm (GAP's after pooling, SimPool's before), so they
    # differ by SimPool's parameters exactly.
    assert results["simpool"]["model_params"] - results["gap"]["model_params"] == (
        2 * WIDTH**2 + 2 * WIDTH)
    lines = table.splitlines()
    assert lines[4] == "| " + " | ".join(COLUMNS) + " |"
    rows = {line.split(" | ")[2].strip("*"): line.split(" | ") for line in lines[6:8]}
    assert rows["gap"][4] == "—" and rows["simpool"][4] == f"{results['simpool']['iou']:.3f}"
    assert rows["simpool"][3] == f"**{results['simpool']['top1']:.2f}**"

    capsys.readouterr()
    again = json.loads(pooling_tournament.main(argv).with_suffix(".json").read_text())
    assert "finished earlier" in capsys.readouterr().out
    assert again["results"] == results


def test_bad_options_are_clear_errors(tmp_path, capsys):
    base = ["--workdir", str(tmp_path), "--out", str(tmp_path)]
    for extra, message in ((["--poolers", "gap,avg"], "unknown poolers ['avg']"),
                           (["--steps", "0"], "--steps must be >= 1"),
                           (["--set", "optim.lrr=1"], "no such config field")):
        with pytest.raises(SystemExit):
            pooling_tournament.parse_args(base + extra)
        assert message in capsys.readouterr().err


def _result(top1, iou=None, pooler_params=0):
    return {"top1": top1, "iou": iou, "pooler_params": pooler_params, "model_params": 2_345_678,
            "flops": 12.34e6, "img_per_s": 999.6, "train_s": 90.0, "step": 10}


HAND_MADE = {
    "gap": _result(80.0), "gem": _result(82.0, pooler_params=1), "lse": _result(82.0),
    "otk": _result(70.0), "kmeans": _result(78.0), "slot": _result(79.0, pooler_params=1234),
    "se": _result(76.0), "ge": _result(77.0), "cls_block": _result(76.0, iou=0.5),
    "cait": _result(75.0, iou=0.25), "simpool": _result(83.0, iou=0.6126), "cls": _result(90.0),
}


def test_winners_and_ranks_of_a_hand_made_result():
    assert winners(HAND_MADE) == {"simple": "gem", "iterative": "slot", "re-weighting": "ge",
                                  "transformer": "cls_block", "overall": "simpool"}
    rank = ranks(HAND_MADE)
    assert (rank["cls"], rank["simpool"], rank["gem"], rank["lse"], rank["gap"]) == (1, 2, 3, 3, 5)
    assert rank["se"] == rank["cls_block"] == 9 and rank["otk"] == 12
    assert group_of("cls") == "baseline" and group_of("cbam") == "re-weighting"
    with pytest.raises(ValueError, match="no group"):
        group_of("avg")


def test_markdown_of_a_hand_made_result():
    lines = markdown(HAND_MADE).splitlines()
    assert lines[0] == "| " + " | ".join(COLUMNS) + " |"
    rows = [line for line in lines[2:] if line.startswith("| ") and line.count("|") == 11]
    assert [r.split(" | ")[2].strip("*") for r in rows] == [
        "gem", "lse", "gap", "slot", "kmeans", "otk", "ge", "se", "cls_block", "cait",
        "simpool", "cls"]
    same = "2.346 M | 12.3 | 1000 | 1.5 |"  # model params, MFLOPs, img/s, train minutes
    assert rows[0] == "| 3 | simple | **gem** | **82.00** | — | 1 | " + same
    assert rows[3] == "| 6 | iterative | **slot** | **79.00** | — | 1.2 k | " + same
    assert rows[9] == "| 11 | transformer | cait | 75.00 | 0.250 | 0 | " + same
    assert rows[10].startswith("| 2 | simpool | **simpool** | **83.00** | 0.613 |")
    comparison = "\n".join(lines[lines.index("| best of | paper (Figure 3) | ours | agrees |"):])
    assert "| simple | gem | gem 82.00 | yes |" in comparison
    assert "| transformer | cait | cls_block 76.00 (cait: 75.00) | no |" in comparison
    assert "| overall | simpool | simpool 83.00 | yes |" in comparison
    partial = markdown({"gap": _result(80.0), "ge": _result(70.0)})
    assert "| simple | gem | gap 80.00 | (paper's not run) (only one of the group run) |" in partial
    assert "| re-weighting | ge | ge 70.00 | yes (only one of the group run) |" in partial
    assert "| overall | simpool | gap 80.00 | (paper's not run) |" in partial
    assert "| iterative | slot | not run | — |" in partial
