"""GET /ui (the dashboard page) and GET /ui/static/{name} (its script and style sheet).

The page is a client of the public API only (/models, /jobs, ...), so it works against any
deployment, and behind auth: see static/dashboard.js for how it sends an API key.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.errors import NotFound

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}

router = APIRouter(prefix="/ui", include_in_schema=False)


@router.get("")
def dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/static/{name}")
def asset(name: str) -> FileResponse:
    if name not in ASSETS:  # a fixed list: no path from the request reaches the file system
        raise NotFound(f"no dashboard asset {name!r}")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})
