"""The page's own files (minillm/machinery/static): which URL paths reach them, and the headers they go out with.

    body, content_type, headers = static_reply("/")            # index.html, with its Content-Security-Policy

Only these files are served, and nothing outside the folder: minillm.machinery.web calls static_reply for "/",
/favicon.ico and /static/...; anything else there is a RequestError 400/403/404 with a JSON body.
"""
import pathlib
import urllib.parse

from minillm.machinery.api import RequestError

STATIC_DIR = pathlib.Path(__file__).resolve().parent / "static"

# Only these file types are served from STATIC_DIR; anything else there is a 404.
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}

# The page loads nothing from anywhere else; the browser enforces it (and so the page works offline).
CONTENT_SECURITY_POLICY = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"


def static_file(url_path):
    """Map a URL path under /static/ (or "/", or /favicon.ico) to a file in STATIC_DIR; RequestError 403/404
    otherwise."""
    if url_path in ("/", "/favicon.ico"):    # a browser asks for /favicon.ico unless the page names an icon
        return STATIC_DIR / ("index.html" if url_path == "/" else "favicon.svg")
    try:
        relative = urllib.parse.unquote(url_path[len("/static/"):], errors="strict")
    except UnicodeDecodeError:
        raise RequestError(400, f"path {url_path!r:.100} is not percent-encoded UTF-8") from None
    # subtle: unquote first, so "%2e%2e/" is seen as "../"; refuse any ".." segment, backslash or NUL outright,
    # and then also check the resolved path (symlinks included) still lies inside STATIC_DIR.
    parts = relative.split("/")
    if any(part in ("..", ".") for part in parts) or "\\" in relative or "\x00" in relative:
        raise RequestError(403, f"path {url_path!r:.100} leaves the static folder")
    try:
        path = (STATIC_DIR / relative).resolve()
        found = path.is_relative_to(STATIC_DIR) and path.is_file() and path.suffix in CONTENT_TYPES
    except OSError:  # e.g. a segment over the file system's 255 bytes: "File name too long", with our full path
        found = False
    if not found:
        raise RequestError(404, f"no static file {url_path!r:.100}")
    return path


def static_reply(url_path):
    """(body, content type, extra headers) of the file a URL path names; RequestError 400/403/404 otherwise."""
    path = static_file(url_path)
    headers = [("Cache-Control", "no-cache")]
    if path.suffix == ".html":
        headers.append(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
    return path.read_bytes(), CONTENT_TYPES[path.suffix], headers
