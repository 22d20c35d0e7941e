"""Fetch one pinned sdist from pip's configured package indexes, verified before use.

The indexes are the ones pip itself would use: ``pip config list`` (pip's
own reading of every pip.conf and of the ``PIP_*`` variables) gives
``index-url``, ``extra-index-url``, ``find-links``, ``no-index``, ``cert``,
``proxy`` and ``timeout``. Each index's project page is read through the
simple API (PEP 691 JSON, else PEP 503 HTML), the file of the pinned
version is downloaded with a size bound while it is hashed, and it reaches
its final name (one atomic rename) only when its sha256 is the pinned one.
Nothing in the archive is run, built or unpacked here: pip is never asked
to download it, because ``pip download`` runs the sdist's build backend to
read its metadata before any hash is checked.

Everything an index, a page or a download says is untrusted: pages are
size-bounded, links may only go to http(s) (or to files when the page is
itself a local file), and a URL is printed only with its password masked.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import hashlib
import html.parser
import http.client
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator, Mapping
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit
from urllib.request import url2pathname

from melt.errors import BuildError

DEFAULT_INDEX = "https://pypi.org/simple"
MAX_SDIST_BYTES = 512 << 20  # the pinned llama-cpp-python sdist is about 77 MB
MAX_PAGE_BYTES = 32 << 20  # a project page with every release listed
DEFAULT_TIMEOUT_S = 15.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ACCEPT = ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
           "text/html;q=0.01")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class IndexSettings:
    """Where pip looks for packages, and how it connects."""

    index_urls: tuple[str, ...] = (DEFAULT_INDEX,)  # index-url, then each extra-index-url
    find_links: tuple[str, ...] = ()
    cert: str | None = None
    proxy: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class Candidate:
    """One file of the wanted name on a page, with the hash the page claims (if any)."""

    url: str
    sha256: str | None
    size: int | None
    where: str  # the page or folder it was listed on, masked


def mask_url(url: str) -> str:
    """``url`` with any password (or a lone token user name) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    userinfo = f"{user}:***" if parts.password is not None else "***"
    return urlunsplit((parts.scheme, f"{userinfo}@{host}", parts.path, parts.query, parts.fragment))


def normalise_name(name: str) -> str:
    """PEP 503 project name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


# -- pip's settings ------------------------------------------------------------


def pip_settings(environ: Mapping[str, str] | None = None) -> IndexSettings:
    """The index settings pip would use for ``pip download`` in ``environ``.

    Read with ``python -m pip config list`` (pip's own precedence: files,
    then the ``download`` section over ``global``, then ``PIP_*``
    variables); without a working pip, from the ``PIP_*`` variables alone.
    """
    env = dict(os.environ if environ is None else environ)
    values = _pip_config_list(env)
    if values is None:
        values = {k[4:].lower().replace("_", "-"): v for k, v in env.items() if k.startswith("PIP_")}

    def get(*keys: str) -> str | None:
        for key in keys:
            if key in values:
                return values[key]
        return None

    index = get("index-url") or DEFAULT_INDEX
    extra = (get("extra-index-url") or "").split()
    no_index = (get("no-index") or "").strip().lower() in _TRUE
    try:
        timeout = float(get("timeout", "default-timeout") or DEFAULT_TIMEOUT_S)
    except ValueError:
        timeout = DEFAULT_TIMEOUT_S
    return IndexSettings(
        index_urls=() if no_index else tuple(dict.fromkeys([index, *extra])),
        find_links=tuple((get("find-links") or "").split()),
        cert=get("cert") or None,
        proxy=get("proxy") or None,
        timeout_s=timeout if timeout > 0 else DEFAULT_TIMEOUT_S,
    )


def _pip_config_list(env: dict[str, str]) -> dict[str, str] | None:
    """``{key: value}`` from ``pip config list``, highest precedence winning; ``None`` without pip."""
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], env=env,
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    rank = {"global": 0, "download": 1, ":env:": 2}
    best: dict[str, tuple[int, str]] = {}
    for line in proc.stdout.splitlines():
        name, sep, raw = line.partition("=")
        section, dot, key = name.rpartition(".")
        if not sep or not dot or section not in rank:
            continue
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, str) and rank[section] >= best.get(key, (-1, ""))[0]:
            best[key] = (rank[section], value)
    return {k: v for k, (_r, v) in best.items()}


# -- reading pages ---------------------------------------------------------------


class _Links(html.parser.HTMLParser):
    """The ``<a href>`` targets of a PEP 503 page, resolved against ``<base>`` or the page."""

    def __init__(self, page_url: str):
        super().__init__()
        self.base = page_url
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "base" and href:
            self.base = urljoin(self.base, href)
        elif tag == "a" and href:
            self.links.append(urljoin(self.base, href))


class _Opener:
    """urllib with pip's certificate, proxy and timeout, and index credentials kept to their host."""

    def __init__(self, settings: IndexSettings):
        cert = settings.cert
        try:
            if cert and os.path.isdir(cert):
                context = ssl.create_default_context(capath=cert)
            else:
                context = ssl.create_default_context(cafile=cert)
        except (OSError, ssl.SSLError) as exc:
            raise BuildError(f"pip's cert setting {cert} cannot be used: {exc}") from None
        handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPSHandler(context=context)]
        if settings.proxy:
            proxies = {"http": settings.proxy, "https": settings.proxy}
            handlers.append(urllib.request.ProxyHandler(proxies))
        self._opener = urllib.request.build_opener(*handlers)
        self._timeout = settings.timeout_s
        self._auth: dict[str, str] = {}  # host:port -> "Basic ..."

    def strip_credentials(self, url: str) -> str:
        """``url`` without its user:password, which are remembered for requests to that host."""
        parts = urlsplit(url)
        if "@" not in parts.netloc:
            return url
        userinfo, _, host = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
        self._auth.setdefault(host.lower(), f"Basic {token}")
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))

    def open(self, url: str, accept: str = "*/*"):
        """An open response for an http(s) ``url``; raises :class:`OSError` subclasses on failure."""
        request = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": "melt"})
        auth = self._auth.get(urlsplit(url).netloc.lower())
        if auth:
            # unredirected: a redirect to another host must not carry the index password
            request.add_unredirected_header("Authorization", auth)
        return self._opener.open(request, timeout=self._timeout)


def _read_bounded(fh: IO[bytes], limit: int, what: str) -> bytes:
    data = fh.read(limit + 1)
    if len(data) > limit:
        raise BuildError(f"{what} is larger than {limit} bytes: refused")
    return data


def _is_file_url(url: str) -> bool:
    return urlsplit(url).scheme == "file"


def _local_path(url: str) -> Path:
    return Path(url2pathname(urlsplit(url).path))


def _page(opener: _Opener, url: str) -> tuple[str, bytes, str]:
    """``(content type, body, final URL)`` of a project page (a local folder's index.html for file:)."""
    if _is_file_url(url):
        path = _local_path(url)
        if path.is_dir():
            path = path / "index.html"
        with open(path, "rb") as fh:
            return "text/html", _read_bounded(fh, MAX_PAGE_BYTES, f"the page {url}"), url
    with opener.open(url, _ACCEPT) as resp:
        ctype = resp.headers.get("Content-Type", "text/html").split(";")[0].strip().lower()
        return ctype, _read_bounded(resp, MAX_PAGE_BYTES, f"the page {mask_url(url)}"), resp.geturl()


def _candidates_on_page(
    ctype: str, body: bytes, page_url: str, wanted: str
) -> Iterator[tuple[str, str | None, int | None]]:
    """``(url, sha256 or None, size or None)`` of every file on a page named ``wanted``."""
    if ctype == "application/vnd.pypi.simple.v1+json":
        try:
            doc = json.loads(body)
            files = doc["files"]
            major = str(doc.get("meta", {}).get("api-version", "1.0")).split(".")[0]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise BuildError(f"{mask_url(page_url)} is not a simple-API JSON page") from None
        if major != "1" or not isinstance(files, list):
            raise BuildError(f"{mask_url(page_url)} speaks simple API {major}, not 1")
        for entry in files:
            if not isinstance(entry, dict) or entry.get("filename") != wanted:
                continue
            url = entry.get("url")
            hashes = entry.get("hashes") if isinstance(entry.get("hashes"), dict) else {}
            size = entry.get("size")
            if isinstance(url, str):
                sha = hashes.get("sha256")
                yield (urljoin(page_url, url), sha if isinstance(sha, str) else None,
                       size if isinstance(size, int) and not isinstance(size, bool) else None)
        return
    parser = _Links(page_url)
    parser.feed(body.decode("utf-8", errors="replace"))
    for link in parser.links:
        parts = urlsplit(link)
        if unquote(parts.path.rsplit("/", 1)[-1]) != wanted:
            continue
        algo, _, value = parts.fragment.partition("=")
        yield urlunsplit(parts._replace(fragment="")), (value if algo == "sha256" else None), None


def find_candidates(settings: IndexSettings, opener: _Opener, package: str, filename: str,
                    problems: list[str]) -> Iterator[Candidate]:
    """Every listing of ``filename`` in the find-links and then the indexes, in pip's order of settings.

    A location that cannot be read adds a line to ``problems`` and is skipped.
    """
    for link in settings.find_links:
        if "://" not in link:
            link = Path(link).resolve().as_uri()
        if _is_file_url(link) and _local_path(link).is_dir():
            path = _local_path(link) / filename
            if path.is_file():
                yield Candidate(path.as_uri(), None, None, str(path.parent))
            continue
        yield from _listed(opener, link, filename, problems)
    for index in settings.index_urls:
        page = index.rstrip("/") + f"/{normalise_name(package)}/"
        yield from _listed(opener, page, filename, problems)


def _listed(opener: _Opener, page_url: str, filename: str, problems: list[str]) -> Iterator[Candidate]:
    """The listings of ``filename`` on one page (``page_url`` may hold credentials, shown masked)."""
    shown = mask_url(page_url)
    scheme = urlsplit(page_url).scheme
    if scheme not in ("http", "https", "file"):
        problems.append(f"{shown}: only http, https and file locations are read")
        return
    try:
        ctype, body, final = _page(opener, opener.strip_credentials(page_url))
        found = list(_candidates_on_page(ctype, body, final, filename))
    except (OSError, ValueError, http.client.HTTPException, BuildError) as exc:
        problems.append(f"{shown}: {_reason(exc)}")
        return
    for url, sha, size in found:
        link_scheme = urlsplit(url).scheme
        if link_scheme not in ("http", "https") and not (link_scheme == "file" and scheme == "file"):
            problems.append(f"{shown} links {filename} to a {link_scheme}: URL, refused")
            continue
        yield Candidate(url, sha.lower() if sha else None, size, shown)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return _mask_text(str(exc.reason))
    if isinstance(exc, FileNotFoundError):
        return "not found"
    return _mask_text(str(exc))[:200]


def _mask_text(text: str) -> str:
    """``text`` with the user information of every URL in it replaced by ``***``."""
    return re.sub(r"(://)[^/\s@]+@", r"\1***@", text)


# -- downloading -----------------------------------------------------------------


def download_verified(
    opener: _Opener, cand: Candidate, sha256: str, final: Path, max_bytes: int
) -> None:
    """Stream ``cand`` into ``final``'s folder, hashing as it comes; rename it to ``final`` on a match.

    Raises :class:`BuildError` (nothing left behind) when it is larger than
    ``max_bytes``, its sha256 is not ``sha256``, or the transfer fails.
    """
    where = mask_url(cand.url)
    if cand.size is not None and cand.size > max_bytes:
        raise BuildError(f"{where} is announced as {cand.size} bytes, over the {max_bytes}-byte "
                         "limit: refused")
    fd, tmp_name = tempfile.mkstemp(prefix=".part-", dir=final.parent)
    tmp = Path(tmp_name)
    try:
        digest, total = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out, _open_file(opener, cand.url, max_bytes) as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                total += len(block)
                if total > max_bytes:
                    raise BuildError(f"{where} is larger than the {max_bytes}-byte limit: "
                                     "download refused")
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != sha256:
            raise BuildError(f"{where} (listed on {cand.where}) has sha256 {got[:16]}.., not the pinned "
                             f"{sha256[:16]}..: refused, nothing unpacked or run")
        tmp.chmod(0o644)
        os.replace(tmp, final)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise BuildError(f"could not download {where}: {_reason(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _open_file(opener: _Opener, url: str, max_bytes: int) -> Iterator[IO[bytes]]:
    """A readable stream of a candidate's bytes (http(s) or a local file)."""
    if _is_file_url(url):
        with open(_local_path(url), "rb") as fh:
            yield fh
        return
    with opener.open(url) as resp:
        length = resp.headers.get("Content-Length") or ""
        if length.isdigit() and int(length) > max_bytes:
            raise BuildError(f"{mask_url(url)} is {length} bytes, over the {max_bytes}-byte "
                             "limit: refused")
        yield resp


def fetch_sdist(
    package: str,
    version: str,
    sha256: str,
    final: Path,
    *,
    settings: IndexSettings | None = None,
    max_bytes: int = MAX_SDIST_BYTES,
    say: Callable[[str], None] | None = None,
) -> Path:
    """Download the ``PACKAGE-VERSION.tar.gz`` sdist whose sha256 is ``sha256`` to ``final``.

    Tries every listing in pip's find-links and indexes (``settings``:
    :func:`pip_settings`) until one verifies. A listing whose page names
    another sha256 is not downloaded. Raises :class:`BuildError` saying
    what each location answered (URLs masked) when none does.
    """
    say = say or (lambda line: None)
    if not _SHA256.match(sha256):
        raise BuildError(f"pinned sha256 {sha256!r} is not 64 lower-case hex digits")
    settings = settings or pip_settings()
    opener = _Opener(settings)
    filename = f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}.tar.gz"
    problems: list[str] = []
    for cand in find_candidates(settings, opener, package, filename, problems):
        if cand.sha256 is not None and cand.sha256 != sha256:
            problems.append(f"{cand.where} lists {filename} with sha256 {cand.sha256[:16]}.., "
                            f"not the pinned {sha256[:16]}..")
            continue
        say(f"downloading {filename} from {cand.where}")
        try:
            download_verified(opener, cand, sha256, final, max_bytes)
            return final
        except BuildError as exc:
            problems.append(str(exc))
    searched = [mask_url(u) for u in (*settings.find_links, *settings.index_urls)]
    detail = "; ".join(problems) if problems else f"not listed in {', '.join(searched) or 'no index'}"
    raise BuildError(f"could not fetch {filename} (sha256 {sha256[:16]}..): {detail}")
