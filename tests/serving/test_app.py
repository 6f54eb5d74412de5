"""The HTTP service over real loopback HTTP: endpoints, limits, unknown ids, batching, parity with top_k."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from sidrec import pipeline
from sidrec.evaluation.protocol import top_k
from sidrec.serving import create_app


@pytest.fixture(scope="module")
def sasrec_parts(sasrec_run):
    return pipeline.load_run(sasrec_run)


def test_endpoints_and_parity_with_top_k(sasrec_run, sasrec_parts, live_server, client_for):
    config, dataset, model = sasrec_parts
    users = list(dataset.user_ids)
    histories = torch.cat([dataset.user_history(u, config.eval.max_len) for u in range(len(users))])
    expected = {flag: top_k(model, histories, 4, flag) for flag in (False, True)}
    app = create_app(sasrec_run, max_wait_ms=20)
    with live_server(app) as server, client_for(server) as http:
        health = http.get("/health").json()
        assert (health["status"], health["model"], health["items"], health["users"]) == ("ok", "sasrec", 12, 40)

        item = http.get("/items/i03").json()
        assert item["index"] == 3 and item["title"] == "item number 3"
        assert http.get("/items/nope").status_code == 404

        schema = http.get("/openapi.json").json()
        assert {"/recommend", "/recommend/batch", "/health", "/items/{item_id}"} <= set(schema["paths"])

        # every user at once from 16 threads: the batcher groups them, answers stay per-user exact
        def ask(args):
            user, flag = args
            return http.post("/recommend", json={"user_id": user, "k": 4, "exclude_history": flag})

        jobs = [(u, f) for f in (False, True) for u in users]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(ask, jobs))
        assert all(a.status_code == 200 for a in answers)
        for (user, flag), answer in zip(jobs, answers):
            row = expected[flag][users.index(user)]
            assert answer.json()["items"] == [str(dataset.item_ids[i]) for i in row.tolist()]
            assert answer.json()["titles"][0] == f"item number {int(row[0])}"
        stats = http.get("/health").json()["batching"]
        assert stats["rows"] == len(jobs) and stats["batches"] < len(jobs) and stats["largest_batch"] > 1

        # an explicit history gives the same as that user's id; batch = the single requests
        seq = [str(dataset.item_ids[i]) for i in histories[5][histories[5] >= 0].tolist()]
        single = http.post("/recommend", json={"history": seq, "k": 4}).json()
        assert single["items"] == http.post("/recommend", json={"user_id": users[5], "k": 4}).json()["items"]
        assert all(s1 >= s2 for s1, s2 in zip(single["scores"], single["scores"][1:]))
        assert not set(single["items"]) & set(seq)  # exclude_history defaults to true
        batch = http.post("/recommend/batch", json={"requests": [{"history": seq, "k": 4},
                                                                 {"user_id": users[5], "k": 2}]}).json()
        assert batch["results"][0]["items"] == single["items"]
        assert batch["results"][1]["items"] == single["items"][:2]


def test_limits_and_unknown_ids_give_clear_4xx(sasrec_run, live_server, client_for):
    app = create_app(sasrec_run, max_history=5, max_k=6, max_batch=2)
    with live_server(app) as server, client_for(server) as http:
        def error(path, body, status=422):
            response = http.post(path, json=body)
            assert response.status_code == status, response.text
            return str(response.json()["detail"])

        assert "'k'" in error("/recommend", {"history": ["i01"], "k": 7}) and "less than or equal to 6" in \
            error("/recommend", {"history": ["i01"], "k": 7})
        assert "history" in error("/recommend", {"history": ["i01"] * 6})
        assert "exactly one of" in error("/recommend", {"history": ["i01"], "user_id": "u1"})
        assert "exactly one of" in error("/recommend", {"k": 3})
        assert "extra" in error("/recommend", {"history": ["i01"], "limit": 3}).lower()
        assert "requests" in error("/recommend/batch", {"requests": [{"user_id": "u1"}] * 3})
        assert "unknown user_id 'ghost'" in error("/recommend", {"user_id": "ghost"}, status=404)
        response = http.post("/recommend", json={"history": ["i01", "x9", "i02", "y8"]})
        assert response.status_code == 422 and response.json()["detail"]["unknown_items"] == ["x9", "y8"]
        message = error("/recommend/batch", {"requests": [{"history": ["i01"]}, {"history": ["zz"]}]})
        assert "requests[1]" in message and "zz" in message
        assert http.post("/recommend", content=b"{not json").status_code == 422

        # Bodies a client should not be able to turn into a 500 or a stall: a lone surrogate (was a 500),
        # a body over --max-body-bytes (413 unread), a long bad input (echoed cut short, not whole).
        surrogate = http.post("/recommend", content=b'{"history": ["\\ud800"]}', headers={"content-type": "application/json"})
        assert surrogate.status_code == 422 and "\\ud800" in surrogate.text
        huge = http.post("/recommend", content=b'{"history": ["' + b"x" * (2 << 20) + b'"]}',
                         headers={"content-type": "application/json"})
        assert huge.status_code == 413 and "--max-body-bytes" in huge.text
        long = http.post("/recommend", json={"history": "x" * 500_000})
        assert long.status_code == 422 and len(long.content) < 2_000 and "500000 characters" in long.text

    lenient = create_app(sasrec_run, unknown_items="ignore")
    with live_server(lenient) as server, client_for(server) as http:
        response = http.post("/recommend", json={"history": ["i01", "x9", "i02"], "k": 3}).json()
        assert response["ignored_items"] == ["x9"] and len(response["items"]) == 3
        assert response["items"] == http.post("/recommend", json={"history": ["i01", "i02"], "k": 3}).json()["items"]
        assert "no known item" in str(http.post("/recommend", json={"history": ["x9"]}).json()["detail"])


def test_full_queue_answers_503(sasrec_run, live_server, client_for):
    app = create_app(sasrec_run, max_queue=1, max_batch=1, max_wait_ms=0)
    batcher = app.state.service.batcher
    fast = batcher.predict

    def slow(*args):
        time.sleep(0.3)
        return fast(*args)

    batcher.predict = slow
    with live_server(app) as server, client_for(server) as http:
        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(lambda _: http.post("/recommend", json={"user_id": "u1"}), range(6)))
        statuses = [c.status_code for c in codes]
        assert 200 in statuses and 503 in statuses and set(statuses) <= {200, 503}
        busy = next(c for c in codes if c.status_code == 503)
        assert "queue is full" in busy.json()["detail"] and busy.headers["retry-after"] == "1"
        assert http.get("/health").json()["batching"]["rejected"] == statuses.count(503)


def test_popularity_run_serves_and_rejects_bad_options(popularity_run, live_server, client_for):
    with pytest.raises(ValueError, match="unknown_items"):
        create_app(popularity_run, unknown_items="drop")
    with live_server(create_app(popularity_run)) as server, client_for(server) as http:
        answer = http.post("/recommend", json={"history": ["i00"], "k": 12}).json()
        assert len(answer["items"]) == 11 and "i00" not in answer["items"]  # seen item removed, not padded
        assert len(http.post("/recommend", json={"history": ["i00"], "k": 12, "exclude_history": False}).json()["items"]) == 12
