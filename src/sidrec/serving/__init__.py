"""Serving and operations: HTTP service, batch export, new items without retraining, run manifests."""

from sidrec.serving.app import create_app, serve
from sidrec.serving.catalogue import Catalogue, ServedRun, open_run
from sidrec.serving.cold_start import add_items
from sidrec.serving.export import export_recommendations
from sidrec.manifest import verify_run, write_manifest

__all__ = ["Catalogue", "ServedRun", "add_items", "create_app", "export_recommendations", "open_run", "serve",
           "verify_run", "write_manifest"]
