"""The results table states what was measured: metrics, training cost, split and history policy."""

from sidrec.evaluation.report import results_table


def run(model: str, train: dict | None) -> dict:
    test = {"recall@10": 0.125, "ndcg@10": 0.0625, "exclude_history": False}
    return {"model": model, "dataset": "ml-100k", "test": test, "seconds": 12.34, "seed": 7,
            **({"train": train} if train is not None else {})}


def test_table_has_training_cost_columns_and_dashes_where_unknown():
    table = results_table([run("sasrec", {"epochs": 3, "seconds_per_epoch": 4.25, "samples_per_second": 812.4}),
                           run("popularity", None),
                           run("tiger", {"epochs": 1, "seconds_per_epoch": None, "samples_per_second": 90.0})])
    lines = table.splitlines()
    assert lines[0] == "| model | data | R@10 | N@10 | epochs | s/epoch | train samples/s | seconds | seed |"
    assert lines[2] == "| sasrec | ml-100k | 0.1250 | 0.0625 | 3 | 4.2 | 812 | 12.3 | 7 |"
    assert lines[3] == "| popularity | ml-100k | 0.1250 | 0.0625 | – | – | – | 12.3 | 7 |"
    assert lines[4] == "| tiger | ml-100k | 0.1250 | 0.0625 | 1 | – | 90 | 12.3 | 7 |"
    assert "history items NOT excluded" in table and "s/epoch" in lines[-1]


def test_table_without_training_info_keeps_the_metric_columns_only():
    table = results_table([run("popularity", {"train_seconds": 0.1})])
    assert table.splitlines()[0] == "| model | data | R@10 | N@10 | seconds | seed |"
