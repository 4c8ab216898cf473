"""``defocus serve``: an HTTP API and a web page for in-focus maps (needs the ``serve`` extra).

:func:`create_app` builds the FastAPI application from :class:`ServeSettings`; ``defocus serve`` runs it with
uvicorn. Predictions go through :class:`~defocus.inference.Predictor`, so a map from the server equals the map
``defocus predict`` writes for the same image and options.
"""
from .app import create_app
from .settings import API_KEY_HEADER, ServeSettings

__all__ = ["create_app", "ServeSettings", "API_KEY_HEADER"]
