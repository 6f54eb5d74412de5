"""Serving and operations: HTTP service, batch export, new items without retraining, run manifests.

The HTTP service (`create_app`, `serve`) needs the `serve` extra (FastAPI, uvicorn); it is imported on
first use, so export, cold start and manifests work on a core install.
"""

from sidrec.manifest import verify_run, write_manifest
from sidrec.serving.catalogue import Catalogue, ServedRun, open_run
from sidrec.serving.cold_start import add_items
from sidrec.serving.export import export_recommendations

__all__ = ["Catalogue", "ServedRun", "add_items", "create_app", "export_recommendations", "open_run", "serve",
           "verify_run", "write_manifest"]


def __getattr__(name: str):
    if name in ("create_app", "serve"):
        from sidrec.extras import require

        require("fastapi", "serve", "the HTTP service")  # uvicorn: checked by `serve` itself, when it runs
        from sidrec.serving import app

        return getattr(app, name)
    raise AttributeError(f"module 'sidrec.serving' has no attribute {name!r}")
