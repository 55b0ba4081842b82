"""A loopback stand-in for the Hugging Face Hub, speaking the real wire protocol (stdlib only).

Why a real HTTP server instead of mocking the client: tests then exercise the same code paths as users
(huggingface_hub's retries, cache layout, error mapping; timm's and datasets' own Hub calls), and
subprocesses (CLI, torchrun) reach it too through ``HF_ENDPOINT``.

Scope: model and dataset repos, branch ``main`` plus any earlier full commit sha, downloads with Range,
the JSON API that ``snapshot_download``/``HfFileSystem``/``datasets`` use, and uploads via preupload +
legacy LFS batch + ndjson commit. Xet is not emulated: clients must run with ``HF_HUB_DISABLE_XET=1``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

USER = "stub-user"
LFS_THRESHOLD = 10 * 1024 * 1024
# Like the real Hub, uploads go to LFS when .gitattributes says so (these suffixes) or when they are > 10 MB.
LFS_SUFFIXES = (".parquet", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".mp4", ".zip", ".tar", ".gz")
# The real Hub's first commit of every new repo adds .gitattributes; kept so pulls see a realistic tree.
GITATTRIBUTES = b"".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n".encode() for s in LFS_SUFFIXES)

_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"
_KIND = r"(?P<kind>models|datasets)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p), h)
    for m, p, h in [
        ("GET", r"^/api/whoami-v2$", "whoami"),
        ("POST", r"^/api/repos/create$", "create_repo"),
        ("POST", r"^/api/validate-yaml$", "validate_yaml"),
        ("GET", rf"^/api/{_KIND}/{_REPO}(?:/revision/(?P<rev>[^/]+))?$", "repo_info"),
        ("GET", rf"^/api/{_KIND}/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$", "tree"),
        ("POST", rf"^/api/{_KIND}/{_REPO}/paths-info/(?P<rev>[^/]+)$", "paths_info"),
        ("POST", rf"^/api/{_KIND}/{_REPO}/preupload/(?P<rev>[^/]+)$", "preupload"),
        ("POST", rf"^/api/{_KIND}/{_REPO}/commit/(?P<rev>[^/]+)$", "commit"),
        ("POST", rf"^/(?P<kind>datasets/)?{_REPO}\.git/info/lfs/objects/batch$", "lfs_batch"),
        ("PUT", r"^/__stub__/lfs/(?P<oid>[0-9a-f]{64})$", "lfs_put"),
        ("POST", r"^/__stub__/lfs/(?P<oid>[0-9a-f]{64})/verify$", "lfs_verify"),
        ("HEAD", rf"^/(?P<kind>datasets/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", "resolve"),
        ("GET", rf"^/(?P<kind>datasets/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", "resolve"),
    ]
]
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_Groups = dict[str, str]  # named groups of the matched route, URL-unquoted
_Query = dict[str, list[str]]
_Reply = tuple[int, dict[str, str], Any]  # status, headers, JSON-able object or raw bytes


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class _Blob:
    """File content plus the two hashes the Hub exposes: git-blob sha1 (``oid``) and, for LFS, sha256."""

    data: bytes
    lfs: bool

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @cached_property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()

    @cached_property
    def git_oid(self) -> str:
        """The git blob sha1 of what git stores: the pointer file for LFS, the content otherwise."""
        body = self.pointer if self.lfs else self.data
        return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()

    @property
    def etag(self) -> str:
        """What the Hub returns as ETag and the client uses as the cache blob name."""
        return self.sha256 if self.lfs else self.git_oid

    def tree_entry(self, path: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": self.git_oid, "size": len(self.data), "path": path}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": len(self.pointer)}
        return entry


@dataclass
class _Commit:
    oid: str
    title: str
    files: dict[str, _Blob]
    date: str = field(default_factory=_now)


@dataclass
class _Repo:
    repo_id: str
    repo_type: str
    private: bool
    commits: list[_Commit]  # oldest first; each keeps its own snapshot of the tree
    created: str = field(default_factory=_now)

    @property
    def head(self) -> _Commit:
        return self.commits[-1]

    def at(self, rev: str) -> _Commit | None:
        """``main`` is the only branch; any full sha in the history is a valid pinned revision."""
        if rev == "main":
            return self.head
        return next((c for c in self.commits if _HEX40.match(rev) and c.oid == rev), None)


class _HttpError(Exception):
    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.commit, self.extra = status, code, message, commit, extra


def _dirs_of(paths: list[str]) -> set[str]:
    return {p.rsplit("/", i)[0] for p in paths for i in range(1, p.count("/") + 1)}


class HubStub:
    """In-memory Hub on ``127.0.0.1:<free port>``; use as a context manager or call start()/stop()."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._lfs: dict[str, bytes] = {}  # uploaded LFS objects by sha256, shared like the real LFS store
        self._log: list[tuple[str, str]] = []
        self._unknown: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> HubStub:
        stub = self

        class Handler(_Handler):
            hub = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="hubstub", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HubStub:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "HubStub not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ---- test helpers ----------------------------------------------------------------------------------
    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, unquoted path without query) of every request since the last reset_log()."""
        with self._lock:
            return list(self._log)

    @property
    def unknown(self) -> list[tuple[str, str]]:
        """Requests no route matched (answered 404): a non-empty list means the stub lags the client."""
        with self._lock:
            return list(self._unknown)

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()
            self._unknown.clear()

    def reset(self) -> None:
        """Forget every repo, LFS object and logged request."""
        with self._lock:
            self._repos.clear()
            self._lfs.clear()
            self.reset_log()

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        with self._lock:
            commit = self._commit_at(repo_type, repo_id, revision)
            return {p: b.data for p, b in commit.files.items()}

    def commits(self, repo_id: str, repo_type: str = "model") -> list[str]:
        """Commit shas, oldest first (the first is the repo-creation commit holding .gitattributes)."""
        with self._lock:
            return [c.oid for c in self._repo(repo_type, repo_id).commits]

    def corrupt(self, repo_id: str, path: str, data: bytes = b"corrupted", repo_type: str = "model") -> str:
        """Swap a file's bytes on ``main`` behind the client's back (no new commit sha, like a broken mirror).

        The served ETag/size change with the content, so the client's own size check passes; only a sha256
        check against a pinned value catches it. Clients that already hold ``snapshots/<sha>/<path>`` keep
        their copy (the cache is keyed by commit); cold caches get the new bytes. Returns the commit sha.
        """
        with self._lock:
            head = self._repo(repo_type, repo_id).head
            if path not in head.files:
                raise KeyError(f"{path} not in {repo_type} {repo_id}")
            head.files[path] = _Blob(data, head.files[path].lfs)
            return head.oid

    # ---- state (call with the lock held) ---------------------------------------------------------------
    def _repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise _HttpError(404, "RepoNotFound", f"Repository {repo_id} ({repo_type}) not found")
        return repo

    def _commit_at(self, repo_type: str, repo_id: str, rev: str) -> _Commit:
        commit = self._repo(repo_type, repo_id).at(rev)
        if commit is None:
            raise _HttpError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return commit

    def _url(self, repo: _Repo) -> str:
        return f"{self.endpoint}/{'datasets/' if repo.repo_type == 'dataset' else ''}{repo.repo_id}"

    def _repo_json(self, repo: _Repo, commit: _Commit) -> dict[str, Any]:
        siblings = []
        for path, blob in sorted(commit.files.items()):
            sib: dict[str, Any] = {"rfilename": path, "size": len(blob.data), "blobId": blob.git_oid}
            if blob.lfs:
                sib["lfs"] = {"sha256": blob.sha256, "size": len(blob.data), "pointerSize": len(blob.pointer)}
            siblings.append(sib)
        return {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "createdAt": repo.created,
            "lastModified": commit.date,
            "siblings": siblings,
        }

    # ---- route handlers: (match groups, query, body) -> (status, headers, body) ------------------------
    def whoami(self, g: _Groups, q: _Query, body: bytes) -> _Reply:
        return 200, {}, {"type": "user", "name": USER, "fullname": USER, "orgs": [], "auth": {"type": "access_token"}}

    def create_repo(self, g: _Groups, q: _Query, body: bytes) -> _Reply:
        req = json.loads(body or b"{}")
        repo_type = req.get("type") or "model"
        repo_id = f"{req.get('organization') or USER}/{req['name']}"
        if repo_type not in ("model", "dataset"):
            raise _HttpError(400, None, f"repo type {repo_type!r} not supported by the stub")
        if (repo := self._repos.get((repo_type, repo_id))) is not None:  # exist_ok=True reads "url" from the 409
            raise _HttpError(409, None, f"You already created this {repo_type} repo", url=self._url(repo))
        private = bool(req.get("private")) or req.get("visibility") == "private"
        init = _Commit(
            hashlib.sha1(uuid.uuid4().bytes).hexdigest(),
            "initial commit",
            {".gitattributes": _Blob(GITATTRIBUTES, False)},
        )
        repo = _Repo(repo_id, repo_type, private, [init])
        self._repos[(repo_type, repo_id)] = repo
        return 200, {}, {"url": self._url(repo), "name": repo_id, "id": repo.repo_id}

    def validate_yaml(self, g: _Groups, q: _Query, body: bytes) -> _Reply:
        return 200, {}, {"errors": [], "warnings": []}

    def repo_info(self, g: _Groups, q: _Query, body: bytes) -> _Reply:
        repo = self._repo(g["kind"][:-1], g["repo"])
        return 200, {}, self._repo_json(repo, self._commit_at(repo.repo_type, repo.repo_id, g["rev"] or "main"))

    def _entries(self, commit: _Commit, recursive: bool, base: str) -> list[dict[str, Any]]:
        prefix = f"{base}/" if base else ""
        files = {p: b for p, b in commit.files.items() if p.startswith(prefix)}
        dirs = _dirs_of(list(files))
        out: list[dict[str, Any]] = []
        for d in sorted(dirs):
            if d.startswith(prefix) and (recursive or "/" not in d[len(prefix) :]):
                out.append({"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d})
        for p, blob in sorted(files.items()):
            if recursive or "/" not in p[len(prefix) :]:
                out.append(blob.tree_entry(p))
        return out

    def tree(self, g: _Groups, q: _Query, body: bytes) -> _Reply:
        commit = self._commit_at(g["kind"][:-1], g["repo"], g["rev"])
        base = (g["path"] or "").strip("/")
        if base and base not in _dirs_of(list(commit.files)):
            raise _HttpError(404, "EntryNotFound", f"{base} does not exist on {g['rev']}", commit.oid)
        recursive = q.get("recursive", ["false"])[0].lower() in ("1", "true")
        return 200, {}, self._entries(commit, recursive, base)

    def paths_info(self, g: _Groups, q: _Query, body: bytes) -> _Reply:
        commit = self._commit_at(g["kind"][:-1], g["repo"], g["rev"])
        dirs = _dirs_of(list(commit.files))
        out: list[dict[str, Any]] = []
        for p in parse_qs(body.decode()).get("paths", []):
            p = p.strip("/")
            if p in commit.files:
                out.append(commit.files[p].tree_entry(p))
            elif p in dirs:
                out.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p})
        return 200, {}, out

    def preupload(self, g: _Groups, q: _Query, body: bytes) -> _Reply:
        commit = self._commit_at(g["kind"][:-1], g["repo"], g["rev"])
        out = []
        for f in json.loads(body)["files"]:
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > LFS_THRESHOLD
            old = commit.files.get(f["path"])
            # The client skips files whose oid matches: sha256 for LFS, git-blob sha1 for regular files.
            oid = None if old is None else (old.sha256 if lfs else old.git_oid)
            out.append(
                {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        return 200, {}, {"files": out, "commitOid": commit.oid}

    def commit(self, g: _Groups, q: _Query, body: bytes) -> _Reply:
        repo = self._repo(g["kind"][:-1], g["repo"])
        if g["rev"] != "main" or q.get("create_pr"):
            raise _HttpError(400, None, "the stub only commits to main (no branches, no PRs)")
        files = dict(repo.head.files)
        header: dict[str, Any] = {}
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, val = item["key"], item["value"]
            if key == "header":
                header = val
            elif key == "file":
                files[val["path"]] = _Blob(base64.b64decode(val["content"]), False)
            elif key == "lfsFile":
                if val["oid"] not in self._lfs:
                    raise _HttpError(422, None, f"LFS object {val['oid']} for {val['path']} was never uploaded")
                files[val["path"]] = _Blob(self._lfs[val["oid"]], True)
            elif key == "deletedFile":
                if files.pop(val["path"], None) is None:
                    raise _HttpError(404, "EntryNotFound", f"cannot delete {val['path']}: no such file")
            elif key == "deletedFolder":
                for p in [p for p in files if p.startswith(val["path"].rstrip("/") + "/")]:
                    del files[p]
            else:
                raise _HttpError(400, None, f"unknown commit operation {key!r}")
        parent = header.get("parentCommit")
        if parent and parent != repo.head.oid:
            raise _HttpError(412, None, f"parent commit {parent} is not the head of main ({repo.head.oid})")
        oid = hashlib.sha1(f"{repo.head.oid}{uuid.uuid4()}".encode()).hexdigest()
        repo.commits.append(_Commit(oid, header.get("summary", ""), files))
        return 200, {}, {"commitUrl": f"{self._url(repo)}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}

    def lfs_batch(self, g: _Groups, q: _Query, body: bytes) -> _Reply:
        self._repo("dataset" if g["kind"] else "model", g["repo"])
        req = json.loads(body)
        if req.get("operation") != "upload":
            raise _HttpError(400, None, "the stub only supports LFS uploads")
        objects = []
        for o in req["objects"]:
            obj: dict[str, Any] = {"oid": o["oid"], "size": o["size"]}
            if o["oid"] not in self._lfs:  # no actions = already stored, the client skips the upload
                href = f"{self.endpoint}/__stub__/lfs/{o['oid']}"
                obj["actions"] = {"upload": {"href": href}, "verify": {"href": f"{href}/verify"}}
            objects.append(obj)
        return 200, {"Content-Type": "application/vnd.git-lfs+json"}, {"transfer": "basic", "objects": objects}

    def lfs_put(self, g: _Groups, q: _Query, body: bytes) -> _Reply:
        if hashlib.sha256(body).hexdigest() != g["oid"]:
            raise _HttpError(400, None, f"uploaded bytes do not hash to {g['oid']}")
        self._lfs[g["oid"]] = body
        return 200, {}, {}

    def lfs_verify(self, g: _Groups, q: _Query, body: bytes) -> _Reply:
        if g["oid"] not in self._lfs:
            raise _HttpError(404, None, f"LFS object {g['oid']} not found")
        return 200, {}, {}

    def resolve(self, g: _Groups, q: _Query, body: bytes) -> _Reply:
        commit = self._commit_at("dataset" if g["kind"] else "model", g["repo"], g["rev"])
        blob = commit.files.get(g["path"])
        if blob is None:
            raise _HttpError(404, "EntryNotFound", f"{g['path']} does not exist on {g['rev']}", commit.oid)
        return 200, {"X-Repo-Commit": commit.oid, "ETag": f'"{blob.etag}"', "Accept-Ranges": "bytes"}, blob.data


class _Handler(BaseHTTPRequestHandler):
    hub: HubStub
    protocol_version = "HTTP/1.1"  # keep-alive, like the real Hub; every reply carries Content-Length
    timeout = 60  # a stuck client must not pin a server thread for the whole session

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib signature (`format` shadows a builtin)
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response(status)
        headers.setdefault("Content-Type", "application/json")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        body = self._body()
        with self.hub._lock:
            self.hub._log.append((self.command, unquote(url.path)))
        for method, pattern, name in _ROUTES:
            m = pattern.match(url.path) if method == self.command else None
            if m is None:
                continue
            groups = {k: unquote(v) if v else v for k, v in m.groupdict().items()}
            try:
                with self.hub._lock:
                    status, headers, out = getattr(self.hub, name)(groups, parse_qs(url.query), body)
            except _HttpError as e:
                headers = {"X-Error-Message": e.message.encode("ascii", "replace").decode()}
                if e.code:
                    headers["X-Error-Code"] = e.code
                if e.commit:
                    headers["X-Repo-Commit"] = e.commit
                self._send(e.status, headers, json.dumps({"error": e.message, **e.extra}).encode())
                return
            if isinstance(out, bytes):
                self._send_bytes(status, headers, out)
            else:
                self._send(status, headers, json.dumps(out).encode())
            return
        if url.path != "/api/agent-harnesses":  # huggingface_hub 2.x probes it; a 404 is the documented answer
            with self.hub._lock:
                self.hub._unknown.append((self.command, unquote(url.path)))
        self._send(404, {}, json.dumps({"error": f"stub: no route for {self.command} {url.path}"}).encode())

    def _send_bytes(self, status: int, headers: dict[str, str], data: bytes) -> None:
        headers["Content-Type"] = "application/octet-stream"
        rng = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").split(",")[0].strip())
        if rng and (rng[1] or rng[2]):
            n = len(data)
            start, end = (int(rng[1]), int(rng[2] or n - 1)) if rng[1] else (max(0, n - int(rng[2])), n - 1)
            if start >= n:
                self._send(416, {"Content-Range": f"bytes */{n}"}, b"")
                return
            end = min(end, n - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{n}"
            status, data = 206, data[start : end + 1]
        self._send(status, headers, data)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch
