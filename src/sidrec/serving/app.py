"""HTTP recommendation service over a trained run directory (FastAPI + uvicorn).

    GET  /                       a self-contained HTML page over the JSON endpoints below
    GET  /health                 liveness, model, catalogue size, batching statistics
    GET  /items?q=..&limit=..    items whose id starts with / title contains `q` (autocomplete)
    GET  /items/{item_id}        one item's metadata (and semantic ID when the model has them)
    POST /recommend              {"history": [item ids]} or {"user_id": ..}, "k", "exclude_history"
    POST /recommend/batch        {"requests": [...]}: several recommendations in one round trip

The run is loaded once when the app is created (read-only, eval mode, no gradients); every model
call goes through the micro-batcher. Requests are validated by pydantic models built from the
configured limits, so the OpenAPI schema at /openapi.json states them and violations get a 422
that names the field.
"""

import base64
import hashlib
import math
import re
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import torch
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from sidrec.serving.batching import MicroBatcher, QueueFull
from sidrec.serving.catalogue import Catalogue, ServedRun, open_run
from sidrec.evaluation.protocol import rank_items
from sidrec.extras import require

ItemId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
MAX_BODY_BYTES = 1 << 20  # a request of 200 ids needs ~10 KB; a 10 MB body stalled every client for ~2 s
ECHO_CHARS, ECHO_ITEMS = 200, 20  # how much of a bad input an error message echoes back
MAX_SEARCH = 50  # cap on `GET /items?limit=`: an autocomplete never needs more


class Recommendation(BaseModel):
    items: list[str] = Field(description="external item ids, best first")
    scores: list[float | None] = Field(description="model scores (higher is better); null if not finite")
    titles: list[str | None]
    ignored_items: list[str] = Field(default_factory=list, description="unknown history ids left out")


class BatchRecommendation(BaseModel):
    results: list[Recommendation]


class ItemInfo(BaseModel):
    item_id: str
    index: int = Field(description="dense item index inside the model")
    title: str | None
    fields: dict[str, str]
    semantic_id: list[int] | None = None


class ItemMatch(BaseModel):
    item_id: str
    title: str | None


class ItemMatches(BaseModel):
    items: list[ItemMatch] = Field(description="exact id first, then id prefix, title prefix, title substring")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    items: int
    users: int
    queue: int
    limits: dict[str, int | float | str]
    batching: dict[str, int | float]


def request_models(max_history: int, max_k: int, max_batch: int) -> tuple[type[BaseModel], type[BaseModel]]:
    """Request schemas carrying this server's limits (so /openapi.json shows them)."""

    class RecommendRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
        history: list[ItemId] | None = Field(None, min_length=1, max_length=max_history,
                                             description="external item ids, oldest first")
        user_id: ItemId | None = Field(None, description="a known user: use their whole recorded history")
        k: int = Field(10, ge=1, le=max_k)
        exclude_history: bool = Field(True, description="leave out items already in the history")

        @model_validator(mode="after")
        def one_source(self):
            if (self.history is None) == (self.user_id is None):
                raise ValueError("give exactly one of `history` (item ids) or `user_id`")
            return self

    class BatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        requests: list[RecommendRequest] = Field(min_length=1, max_length=max_batch)

    return RecommendRequest, BatchRequest


def _json_safe(value):
    """What an error may echo of a bad input: NaN/Infinity as strings (Python's parser accepts them, JSON
    cannot carry them), lone surrogates escaped, and long strings and lists cut short (a 10 MB body was
    echoed whole)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        text = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return text if len(text) <= ECHO_CHARS else f"{text[:ECHO_CHARS]}… ({len(text)} characters)"
    if isinstance(value, dict):
        return {_json_safe(k): _json_safe(v) for k, v in list(value.items())[:ECHO_ITEMS]}
    if isinstance(value, list):
        head = [_json_safe(v) for v in value[:ECHO_ITEMS]]
        return head if len(value) <= ECHO_ITEMS else [*head, f"… ({len(value)} items)"]
    return value


async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": _json_safe(jsonable_encoder(exc.errors()))})


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def load_page() -> tuple[str, dict[str, str]]:
    """The packaged page and a Content-Security-Policy that allows only its own inline code and this origin.

    The browser then enforces what the page promises: no CDN, no third-party request, no injected script.
    """
    html = resources.files(__package__).joinpath("page.html").read_text("utf-8")
    sources = {tag: " ".join(map(_csp_hash, re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)))
               for tag in ("script", "style")}
    policy = (f"default-src 'none'; script-src {sources['script']}; style-src {sources['style']}; "
              "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return html, {"content-security-policy": policy}


class ItemSearch:
    """Case-insensitive item lookup by id or title for the page's autocomplete (lower-cased once, at start-up)."""

    def __init__(self, catalogue: Catalogue):
        self.catalogue = catalogue
        self.ids = pd.Series(catalogue.item_ids, dtype=object).str.casefold()
        self.titles = pd.Series(catalogue.titles, dtype=object).fillna("").astype(str).str.casefold()

    def __call__(self, query: str, limit: int) -> list[ItemMatch]:
        q = query.casefold()
        tiers = [self.ids == q, self.ids.str.startswith(q), self.titles.str.startswith(q),
                 self.titles.str.contains(q, regex=False)]
        tier = np.select(tiers, range(len(tiers)), len(tiers))
        hits = np.flatnonzero(tier < len(tiers))
        best = hits[np.argsort(tier[hits], kind="stable")[:limit]]
        return [ItemMatch(item_id=self.catalogue.item_ids[i], title=self.catalogue.titles[i]) for i in best]


class RecommendService:
    """Turns validated requests into model rows and model rows back into responses."""

    def __init__(self, served: ServedRun, batcher: MicroBatcher, unknown_items: str):
        self.served = served
        self.batcher = batcher
        self.unknown_items = unknown_items
        self.max_len = served.config.eval.max_len
        self.users = pd.Index(served.dataset.user_ids.astype(str))

    def history(self, request, where: str) -> tuple[torch.Tensor, list[str]]:
        """Dense history (most recent `eval.max_len` items) and the unknown ids that were ignored."""
        if request.user_id is not None:
            user = int(self.users.get_indexer([request.user_id])[0])
            if user < 0:
                raise HTTPException(404, f"{where}unknown user_id {request.user_id!r}")
            row = self.served.dataset.user_history(user, self.max_len)[0]
            return row[row >= 0], []
        index = self.served.catalogue.lookup(request.history)
        unknown = list(dict.fromkeys(np.asarray(request.history, dtype=object)[index < 0].tolist()))
        if unknown and self.unknown_items == "error":
            raise HTTPException(422, {"message": f"{where}unknown item ids in history: {', '.join(unknown[:20])}",
                                      "unknown_items": unknown})
        known = index[index >= 0]
        if not len(known):
            raise HTTPException(422, {"message": f"{where}no known item in history", "unknown_items": unknown})
        return torch.from_numpy(known[-self.max_len:].astype(np.int64)), unknown

    async def recommend(self, requests: list, batch: bool) -> list[Recommendation]:
        rows = [self.history(r, f"requests[{i}]: " if batch else "") for i, r in enumerate(requests)]
        try:
            items, scores = await self.batcher.submit([h for h, _ in rows], max(r.k for r in requests),
                                                      [r.exclude_history for r in requests])
        except QueueFull as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from None
        catalogue = self.served.catalogue
        out = []
        for request, (_, ignored), row_items, row_scores in zip(requests, rows, items.tolist(), scores.tolist()):
            keep = [(i, s) for i, s in zip(row_items[:request.k], row_scores[:request.k]) if i >= 0]
            out.append(Recommendation(items=[str(catalogue.item_ids[i]) for i, _ in keep],
                                      scores=[s if np.isfinite(s) else None for _, s in keep],
                                      titles=[catalogue.titles[i] for i, _ in keep], ignored_items=ignored))
        return out


def create_app(run_dir: str | Path, *, max_history: int = 200, max_k: int = 100, max_batch: int = 64,
               unknown_items: Literal["error", "ignore"] = "error", max_wait_ms: float = 2.0,
               max_queue: int = 256, threads: int | None = None, verify: bool = True,
               max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """Load the run once and build the service; `verify` checks RUN_DIR/manifest.json first."""
    if unknown_items not in ("error", "ignore"):
        raise ValueError(f"unknown_items must be 'error' or 'ignore', got {unknown_items!r}")
    for name, value in (("max_history", max_history), ("max_k", max_k), ("max_batch", max_batch),
                        ("max_body_bytes", max_body_bytes)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if threads:
        torch.set_num_threads(threads)
    served = open_run(run_dir, verify=verify)
    model = served.model
    batcher = MicroBatcher(lambda h, k, exclude: rank_items(model, h, k, exclude),
                           max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue)
    service = RecommendService(served, batcher, unknown_items)
    RecommendRequest, BatchRequest = request_models(max_history, max_k, max_batch)
    search = ItemSearch(served.catalogue)
    page, page_headers = load_page()
    limits = {"max_history": max_history, "max_k": max_k, "max_batch": max_batch, "max_wait_ms": max_wait_ms,
              "max_queue": max_queue, "unknown_items": unknown_items, "model_history": service.max_len,
              "max_search": MAX_SEARCH, "max_body_bytes": max_body_bytes}

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="sidrec", description=f"Recommendations from {Path(run_dir).name} ({model.name})",
                  lifespan=lifespan, exception_handlers={RequestValidationError: _invalid_request})
    app.state.service = service

    @app.middleware("http")
    async def body_limit(request: Request, call_next):
        """413 before a large body is read or parsed, by its Content-Length (a chunked upload without one is
        not limited here: behind a proxy, let it cap bodies too)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            return JSONResponse(status_code=413, content={
                "detail": f"request body of {declared} bytes exceeds the limit of {max_body_bytes} (--max-body-bytes)"})
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=page_headers)

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(model=model.name, items=len(served.catalogue), users=served.dataset.n_users,
                      queue=batcher.depth, limits=limits, batching=batcher.stats.as_dict())

    @app.get("/items", response_model=ItemMatches)
    def find_items(q: Annotated[str, Query(min_length=1, max_length=256, description="id or title text")],
                         limit: Annotated[int, Query(ge=1, le=MAX_SEARCH)] = 10) -> ItemMatches:
        return ItemMatches(items=search(q, limit))  # sync: a large catalogue's scan runs off the event loop

    @app.get("/items/{item_id}", response_model=ItemInfo)
    async def item(item_id: str) -> ItemInfo:
        index = int(served.catalogue.lookup([item_id])[0])
        if index < 0:
            raise HTTPException(404, f"unknown item_id {item_id!r}")
        sids = getattr(model, "sids", None)
        return ItemInfo(item_id=item_id, index=index, title=served.catalogue.titles[index],
                        fields=served.catalogue.record(index),
                        semantic_id=sids.codes[index].tolist() if sids is not None else None)

    @app.post("/recommend", response_model=Recommendation)
    async def recommend(request: RecommendRequest) -> Recommendation:
        return (await service.recommend([request], batch=False))[0]

    @app.post("/recommend/batch", response_model=BatchRecommendation)
    async def recommend_batch(request: BatchRequest) -> BatchRecommendation:
        return BatchRecommendation(results=await service.recommend(request.requests, batch=True))

    return app


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "warning",
          **limits) -> None:
    """Run the service with uvicorn until interrupted; `limits` go to `create_app`."""
    uvicorn = require("uvicorn", "serve", "the HTTP service")
    uvicorn.run(create_app(run_dir, **limits), host=host, port=port, log_level=log_level)
