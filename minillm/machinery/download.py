"""Downloading the full data set (Renicames/turkish-law-chatbot, Apache-2.0) from Hugging Face.

    python -m minillm.machinery.download download --out data/full

Each file is verified (size, the server's checksum, an optional pinned SHA-256) and parsed as question/answer
pairs before it takes its final name, so a broken or partial download never looks like data.
"""
import argparse
import hashlib
import os
import sys
import time
import urllib.error
import urllib.request

from minillm.machinery.datafiles import load_pairs
from minillm.files import atomic_write


HF_BASE_URL = "https://huggingface.co/datasets/Renicames/turkish-law-chatbot/resolve/main"
HF_FILES = ("train.json", "test.json")


class DownloadError(RuntimeError):
    """A download that failed or did not verify; nothing is left at the destination."""


class _RecordRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects as usual, but keeps each hop's headers: Hugging Face puts the file's checksum
    (X-Linked-Etag) and size (X-Linked-Size) on the redirect, not on the CDN's final answer."""

    def __init__(self):
        super().__init__()
        self.hops = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.hops.append(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _git_blob_sha1(path: str, size: int) -> str:
    """Git's blob id of a file: SHA-1 of b"blob <size>\\0" followed by the content."""
    h = hashlib.sha1(b"blob %d\x00" % size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def _expected_digest(headers_list) -> tuple[str, str] | None:
    """("sha256" | "git-sha1", hex) from the server's ETag headers, or None when they carry no checksum.

    Hugging Face sends X-Linked-Etag = SHA-256 for files kept in Git LFS, and ETag = the git blob id
    (SHA-1 of b"blob <size>\\0" + content) for files kept in git itself. Other ETags (e.g. a CDN's MD5) are
    not checksums we can rely on and are ignored.
    """
    for name in ("X-Linked-Etag", "ETag"):
        for headers in headers_list:
            value = headers.get(name)
            if not value:
                continue
            value = value.strip()
            if value.startswith("W/"):
                continue                          # a weak ETag promises nothing about the bytes
            value = value.strip('"').lower()
            if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
                return "sha256", value
            if len(value) == 40 and all(c in "0123456789abcdef" for c in value):
                return "git-sha1", value
    return None


def _stream(response, out, url: str, name: str, expected_size, progress: bool):
    """Copy the response body into `out` in 64 KiB chunks; return (SHA-256 hex digest, bytes)."""
    sha256, n, last = hashlib.sha256(), 0, 0.0
    while True:
        try:
            chunk = response.read(1 << 16)
        except (OSError, ValueError) as e:     # IncompleteRead, reset connection, timeout
            raise DownloadError(f"{url}: connection broke after {n} bytes ({e!r})") from None
        if not chunk:
            break
        out.write(chunk)
        sha256.update(chunk)
        n += len(chunk)
        now = time.monotonic()
        if progress and (now - last > 0.2):
            last = now
            shown = f"{n / 1e6:.2f}/{expected_size / 1e6:.2f} MB ({100 * n / expected_size:.0f}%)" \
                if expected_size else f"{n / 1e6:.2f} MB"
            print(f"\r{name}: {shown}", end="", file=sys.stderr, flush=True)
    if progress:
        print(f"\r{name}: {n / 1e6:.2f} MB done" + " " * 20, file=sys.stderr, flush=True)
    return sha256.hexdigest(), n


def download_file(url: str, dest: str, expected_sha256: str | None = None, timeout: float = 30.0,
                  progress: bool = True, validate=None) -> dict:
    """Download url to dest atomically; verify size and checksum; return {"path", "bytes", "sha256", "checked"}.

    The bytes go through minillm.files.atomic_write: dest takes the new file only after every check passed,
    including `validate(temporary_path)` when given (it returns a value stored under "validated", or
    raises); on any failure dest is the old file or absent, never a partial download.
    """
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    redirects = _RecordRedirects()
    opener = urllib.request.build_opener(redirects)
    request = urllib.request.Request(url, headers={"User-Agent": "minillm-downloader/1"})
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: the server answered HTTP {e.code} {e.reason}; expected the file") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{url}: could not connect ({reason}). Are you offline? The full data set needs "
                            f"internet; `make train` works offline with the sample in data/.") from None
    headers = [response.headers] + redirects.hops[::-1]    # final answer first, then hops backwards
    total = response.headers.get("Content-Length")
    total = int(total) if total and total.isdigit() else None
    linked = next((h.get("X-Linked-Size") for h in redirects.hops if h.get("X-Linked-Size")), None)
    expected_size = int(linked) if linked and linked.isdigit() else total
    result = {"path": dest}

    def write(out):
        result["sha256"], result["bytes"] = _stream(response, out, url, os.path.basename(dest), expected_size,
                                                    progress)

    def check(tmp):
        digest, n, checked = result["sha256"], result["bytes"], []
        if expected_size is not None and n != expected_size:
            raise DownloadError(f"{url}: received {n} bytes; the server announced {expected_size}")
        if expected_sha256 is not None:
            if digest != expected_sha256.lower():
                raise DownloadError(f"{url}: SHA-256 {digest} does not match the expected {expected_sha256}")
            checked.append("sha256 (given)")
        server = _expected_digest(headers)
        if server is not None:
            kind, value = server
            got = digest if kind == "sha256" else _git_blob_sha1(tmp, n)
            if got != value:
                raise DownloadError(f"{url}: {kind} {got} does not match the server's {value}")
            checked.append(f"{kind} (server)")
        if expected_size is not None:
            checked.append("size")
        result["checked"] = checked
        if validate is not None:
            try:
                result["validated"] = validate(tmp)
            except (ValueError, OSError) as e:
                raise DownloadError(f"{url}: downloaded, but the content is not what was expected: {e}") from None

    with response:
        atomic_write(dest, write, check=check)
    return result


def download(out_dir: str, files=HF_FILES, base_url: str = HF_BASE_URL, expected_sha256: dict | None = None,
             timeout: float = 30.0, progress: bool = True) -> list[dict]:
    """Download the data set's files into out_dir, verify each, and check that each parses as Q&A pairs."""
    results = []
    for name in files:
        dest = os.path.join(out_dir, name)
        fmt = os.path.splitext(name)[1].lstrip(".").lower() or "json"

        def count_pairs(tmp_path, fmt=fmt):    # a file that is not Q&A pairs is not the data set
            return len(load_pairs(tmp_path, fmt=fmt))
        info = download_file(f"{base_url.rstrip('/')}/{name}", dest, (expected_sha256 or {}).get(name),
                             timeout=timeout, progress=progress, validate=count_pairs)
        info["pairs"] = info.pop("validated")
        results.append(info)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minillm.machinery.download", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("download", help="download the full Renicames/turkish-law-chatbot files")
    d.add_argument("--out", required=True, help="directory to write the files into")
    d.add_argument("--files", nargs="+", default=list(HF_FILES), help="file names (default: %(default)s)")
    d.add_argument("--base-url", default=HF_BASE_URL, help="where the files live (default: Hugging Face)")
    d.add_argument("--sha256", action="append", default=[], metavar="NAME=HEX",
                   help="pin a file's SHA-256 (in addition to the server's own checksum)")
    d.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server")
    args = parser.parse_args(argv)
    pins = {}
    for item in args.sha256:
        name, sep, value = item.partition("=")
        if not sep or len(value) != 64:
            parser.error(f"--sha256 expects NAME=<64 hex digits>, got {item!r}")
        pins[name] = value
    try:
        results = download(args.out, args.files, args.base_url, pins, args.timeout)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for r in results:
        print(f"{r['path']}: {r['pairs']} pairs, {r['bytes']} bytes, sha256 {r['sha256']}, "
              f"checked: {', '.join(r['checked']) or 'nothing the server offered'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
