"""benchmarks/tokenizer_quality.py: the transform-ablation summary is computed from nu_ablation.json."""

import json

from benchmark_module import load_benchmark


def _side(collisions: float, perplexity: list[float], **extra) -> dict:
    return {"collision_rate": collisions, "perplexity": perplexity, "gini": [0.2, 0.4], "recon_mse": 1e-3, **extra}


def test_ablation_summary_averages_levels_and_reads_the_fitted_parameters(tmp_path, monkeypatch):
    module = load_benchmark("tokenizer_quality")
    path = tmp_path / "nu_ablation.json"
    row = {"data": "toy", "pair": "RQ-VAE vs NU-RQ-VAE", "meta": {"commit": "abc1234"},
           "plain": _side(0.0426, [100.0, 200.0]), "nu": _side(0.0380, [190.0, 230.0], a=[1.0, 2.1, 3.0], b=[2.0, 2.6, 4.0])}
    path.write_text(json.dumps({"results": [row]}))
    monkeypatch.setattr(module, "ABLATION", path)
    line = module.ablation_summary()[-1]
    assert line == ("| toy | RQ-VAE vs NU-RQ-VAE | abc1234 | 0.0426 -> 0.0380 | 150 -> 210 | 0.300 -> 0.300 | "
                    "1.00e-03 -> 1.00e-03 | 2.1 / 2.6 |")
    monkeypatch.setattr(module, "ABLATION", tmp_path / "absent.json")
    assert module.ablation_summary() == []
