"""Serving and operations: HTTP service, batch export, new items without retraining, run manifests."""

from sidrec.serving.app import create_app, serve
from sidrec.serving.catalogue import Catalogue, ServedRun, open_run
from sidrec.serving.manifest import verify_run, write_manifest

__all__ = ["Catalogue", "ServedRun", "create_app", "open_run", "serve", "verify_run", "write_manifest"]
