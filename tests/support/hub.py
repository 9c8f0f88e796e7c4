"""A stand-in for the Hugging Face Hub: the HTTP calls `huggingface_hub` and `datasets` make to find, list and
download a repository's files, served from a local folder on 127.0.0.1, with faults injected per file.

    with HubStandIn(root) as hub:           # root/datasets/<owner>/<name>/..., root/models/<owner>/<name>/...
        hub.fail("sample/10BT/000_00000.parquet", status=503, times=2)
        subprocess.run(cmd, env={**os.environ, **hub.environment(home)})
        hub.requests                        # every request: (method, repo type, repo id, path, status)

Each repository has one commit, `main`, whose id is a digest of its files. A file is served as the hub serves
an LFS file (its ETag is the content's sha256, listed as `lfs.oid` by the tree and paths-info calls), with
byte ranges. Faults, consumed in the order they were added, one per request of that file:
- `fail(path, status, times, retry_after, method)`: an error status (`Retry-After` when given);
- `drop(path, times)`: the headers and half the body, then the connection closes;
- `corrupt(path, times)`: the whole length, wrong bytes;
- `slow(path, seconds, times)`: a pause before the body.
`bytes_per_second` limits every connection's body rate, as a remote server far away would; `advertise(path, size)`
makes the listings claim another size (the disk check reads them); `most_parallel` is the most file bodies that
were being sent at once.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
import shlex
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from support.paths import readme_lines

GATED, PRIVATE = "gated", "private"


@functools.lru_cache(maxsize=256)
def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Fault:
    kind: str  # status | drop | corrupt | slow
    times: int
    status: int = 0
    retry_after: int | None = None
    seconds: float = 0.0
    method: str = "GET"


@dataclass
class Request:
    method: str
    repo_type: str
    repo_id: str
    path: str
    status: int


@dataclass
class Repo:
    folder: Path
    access: str | None = None  # None, GATED or PRIVATE
    files: dict[str, bytes] = field(default_factory=dict)
    advertised: dict[str, int] = field(default_factory=dict)  # sizes the listings claim instead of the real ones

    @property
    def commit(self) -> str:
        digest = hashlib.sha1()
        for path, data in sorted(self.files.items()):
            digest.update(path.encode() + b"\0" + sha256_of(data).encode())
        return digest.hexdigest()

    def entry(self, path: str) -> dict:
        data = self.files[path]
        git_oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        size = self.advertised.get(path, len(data))
        return {"type": "file", "oid": git_oid, "size": size, "path": path,
                "lfs": {"oid": sha256_of(data), "size": size, "pointerSize": 134}}


class HubStandIn:
    def __init__(self, root: Path, bytes_per_second: float | None = None):
        self.root, self.bytes_per_second = Path(root), bytes_per_second
        self.faults: dict[str, list[Fault]] = defaultdict(list)
        self.requests: list[Request] = []
        self.access: dict[str, str] = {}
        self.advertised: dict[str, int] = {}
        self.most_parallel, self._sending = 0, 0
        self._lock = threading.Lock()
        self._read: dict[tuple[str, str], tuple[tuple, dict[str, bytes]]] = {}

    # --- set-up ---
    def set_access(self, repo_id: str, access: str | None):
        self.access[repo_id] = access

    def fail(self, path: str, status: int, times: int = 1, retry_after: int | None = None, method: str = "GET"):
        self.faults[path].append(Fault("status", times, status=status, retry_after=retry_after, method=method))

    def drop(self, path: str, times: int = 1):
        self.faults[path].append(Fault("drop", times))

    def corrupt(self, path: str, times: int = 1):
        self.faults[path].append(Fault("corrupt", times))

    def slow(self, path: str, seconds: float, times: int = 1):
        self.faults[path].append(Fault("slow", times, seconds=seconds))

    def advertise(self, path: str, size: int):
        self.advertised[path] = size

    def clear_faults(self):
        self.faults.clear()

    def downloads(self, path: str) -> int:
        """Completed or attempted body requests (GET) of a file."""
        return sum(1 for r in self.requests if r.method == "GET" and r.path == path)

    # --- the server ---
    def __enter__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def environment(self, home: Path) -> dict:
        """What a process needs to talk to this stand-in, with its own empty caches under `home`."""
        return {"HF_ENDPOINT": self.endpoint, "HF_HOME": str(home), "HF_HUB_DISABLE_XET": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "2",
                "HF_TOKEN": "", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}

    def repo(self, repo_type: str, repo_id: str) -> Repo | None:
        folder = self.root / repo_type / repo_id
        if not folder.is_dir():
            return None
        found = sorted(p for p in folder.rglob("*") if p.is_file())
        signature = tuple((p, p.stat().st_size, p.stat().st_mtime_ns) for p in found)
        with self._lock:  # read again only when a file changed
            if self._read.get((repo_type, repo_id), (None,))[0] != signature:
                files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in found}
                self._read[(repo_type, repo_id)] = (signature, files)
            files = self._read[(repo_type, repo_id)][1]
        return Repo(folder, self.access.get(repo_id), files, self.advertised)

    def next_fault(self, path: str, method: str) -> Fault | None:
        with self._lock:
            for fault in self.faults.get(path, []):
                if fault.times > 0 and fault.method == method:
                    fault.times -= 1
                    return fault
        return None

    def record(self, request: Request):
        with self._lock:
            self.requests.append(request)


API = re.compile(r"^/api/(?P<type>models|datasets)/(?P<repo>[^/]+/[^/]+)"
                 r"(?:/(?P<call>revision|tree|paths-info)/(?P<rev>[^/]+)(?:/(?P<path>.*))?)?$")
RESOLVE = re.compile(r"^/(?:(?P<type>datasets)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


def _handler_for(hub: HubStandIn):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet: the test reads hub.requests
            pass

        def do_GET(self):
            self.route()

        def do_HEAD(self):
            self.route()

        def do_POST(self):
            self.route()

        def route(self):
            url = urlparse(self.path)
            path = unquote(url.path)
            if match := RESOLVE.match(path):
                repo_type = match["type"] or "models"
                return self.resolve(repo_type, match["repo"], match["rev"], match["path"])
            if match := API.match(path):
                return self.api(match["type"], match["repo"], match["call"], match["rev"], match["path"] or "",
                                parse_qs(url.query))
            self.send(404, {"error": "not found"}, repo=("", "", path))

        # --- answers ---
        def send(self, status: int, body, headers: dict | None = None, repo=("", "", "")):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, str(value))
            if not isinstance(body, bytes):
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            hub.record(Request(self.command, *repo, status))

        def find_repo(self, repo_type: str, repo_id: str, rev: str | None, path: str) -> Repo | None:
            """The repository, or None once the hub's refusal is sent (missing, gated, private, bad revision)."""
            where = (repo_type, repo_id, path)
            repo = hub.repo(repo_type, repo_id)
            if repo is None or repo.access == PRIVATE:
                self.send(401, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}, where)
                return None
            if repo.access == GATED:
                self.send(403, {"error": f"Access to dataset {repo_id} is restricted. You must have access to it "
                                         "and be authenticated to access it. Please log in."},
                          {"X-Error-Code": "GatedRepo"}, where)
                return None
            if rev not in (None, "main", repo.commit, "refs%2Fheads%2Fmain", "refs/heads/main"):
                self.send(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"}, where)
                return None
            return repo

        def api(self, repo_type: str, repo_id: str, call: str | None, rev: str | None, path: str, query: dict):
            repo = self.find_repo(repo_type, repo_id, rev, path)
            if repo is None:
                return
            where = (repo_type, repo_id, path)
            if call in (None, "revision"):
                info = {"id": repo_id, "_id": repo.commit[:24], "sha": repo.commit, "private": False, "gated": False,
                        "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                        "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
                        "siblings": [{"rfilename": name} for name in repo.files]}
                return self.send(200, info, repo=where)
            if call == "tree":
                recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
                return self.send(200, tree(repo, path.strip("/"), recursive), repo=where)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode()
            if "json" in (self.headers.get("Content-Type") or ""):
                paths = json.loads(raw or "{}").get("paths", [])
            else:
                paths = parse_qs(raw).get("paths", [])
            self.send(200, [repo.entry(p) for p in paths if p in repo.files], repo=where)

        def resolve(self, repo_type: str, repo_id: str, rev: str, path: str):
            repo = self.find_repo(repo_type, repo_id, rev, path)
            if repo is None:
                return
            where = (repo_type, repo_id, path)
            if path not in repo.files:
                return self.send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound",
                                                                     "X-Repo-Commit": repo.commit}, where)
            fault = hub.next_fault(path, self.command)
            if fault and fault.kind == "status":
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                return self.send(fault.status, {"error": f"stand-in fault {fault.status}"}, headers, where)
            data = repo.files[path]
            sha256 = sha256_of(data)
            headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{sha256}"', "X-Linked-Etag": f'"{sha256}"',
                       "X-Linked-Size": len(data), "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
            start, end = byte_range(self.headers.get("Range"), len(data))
            status = 206 if (start, end) != (0, len(data)) else 200
            if status == 206:
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
            body = data[start:end]
            if fault and fault.kind == "corrupt":
                body = bytes(b ^ 0x5A for b in body)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, str(value))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            hub.record(Request(self.command, *where, status))
            if self.command == "HEAD":
                return
            with hub._lock:
                hub._sending += 1
                hub.most_parallel = max(hub.most_parallel, hub._sending)
            try:
                if fault and fault.kind == "slow":
                    time.sleep(fault.seconds)
                if fault and fault.kind == "drop":  # half the body, then the connection closes
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.write_body(body)
            finally:
                with hub._lock:
                    hub._sending -= 1

        def write_body(self, body: bytes):
            if not hub.bytes_per_second:
                self.wfile.write(body)
                return
            chunk = 64 * 1024
            started = time.monotonic()
            for offset in range(0, len(body), chunk):
                self.wfile.write(body[offset : offset + chunk])
                ahead = (offset + chunk) / hub.bytes_per_second - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)

    return Handler


def byte_range(header: str | None, size: int) -> tuple[int, int]:
    """`Range: bytes=a-b` as a half-open interval of the file; the whole file without one."""
    match = re.match(r"bytes=(\d*)-(\d*)", header or "")
    if not match:
        return 0, size
    first, last = match.groups()
    if not first:  # a suffix: the last N bytes
        return max(size - int(last), 0), size
    return int(first), min(int(last) + 1, size) if last else size


def tree(repo: Repo, folder: str, recursive: bool) -> list[dict]:
    """The tree call: files and folders under `folder`, one level or all."""
    prefix = f"{folder}/" if folder else ""
    entries, folders = [], set()
    for path in repo.files:
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix):].split("/")
        for depth in range(1, len(parts)):
            if recursive or depth == 1:
                folders.add(prefix + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            entries.append(repo.entry(path))
    return [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
            for f in sorted(folders)] + entries


# --- repositories shaped like the ones the kit reads ---

FINEWEB_COLUMNS = ("text", "id", "dump", "url", "file_path", "language", "language_score", "token_count", "score",
                   "int_score")

FINEWEB_README = """---
license: odc-by
configs:
- config_name: default
  data_files:
  - split: train
    path: data/*/*
- config_name: sample-10BT
  data_files:
  - split: train
    path: sample/10BT/*
---
# A FineWeb-Edu-shaped stand-in
"""


def fineweb_edu_shard(documents: list[str], shard: int) -> bytes:
    """A parquet file with FineWeb-Edu's columns holding `documents`."""
    n = len(documents)
    table = pa.table({
        "text": documents,
        "id": [f"<urn:uuid:{shard:04d}-{i:08d}>" for i in range(n)],
        "dump": ["CC-MAIN-2024-10"] * n,
        "url": [f"https://example.org/{shard}/{i}" for i in range(n)],
        "file_path": [f"s3://commoncrawl/{shard}.warc.gz"] * n,
        "language": ["en"] * n,
        "language_score": pa.array([0.95] * n, pa.float64()),
        "token_count": pa.array([len(d.split()) for d in documents], pa.int64()),
        "score": pa.array([3.1] * n, pa.float64()),
        "int_score": pa.array([3] * n, pa.int64()),
    })
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=64)
    return sink.getvalue()


@dataclass(frozen=True)
class FinewebHub:
    root: Path  # what a HubStandIn serves
    shards: dict[str, list[str]]  # each sample-10BT file's documents, in the repository's order

    @property
    def documents(self) -> list[str]:
        return [document for shard in self.shards.values() for document in shard]


def write_fineweb_edu(root: Path, shards: list[list[str]], repo_id: str = "HuggingFaceFW/fineweb-edu") -> list[str]:
    """A FineWeb-Edu-shaped dataset repository: `default` (one shard under data/) and `sample-10BT` (these
    shards under sample/10BT/, in order). Returns the sample's paths in the repository."""
    folder = root / "datasets" / repo_id
    (folder / "sample" / "10BT").mkdir(parents=True, exist_ok=True)
    (folder / "data" / "CC-MAIN-2024-10").mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(FINEWEB_README)
    (folder / "data" / "CC-MAIN-2024-10" / "000_00000.parquet").write_bytes(fineweb_edu_shard(shards[0][:3], 99))
    paths = []
    for i, documents in enumerate(shards):
        path = f"sample/10BT/{i:03d}_00000.parquet"
        (folder / path).write_bytes(fineweb_edu_shard(documents, i))
        paths.append(path)
    return paths


HELLASWAG_README = """---
configs:
- config_name: default
  data_files:
  - split: validation
    path: data/validation-*
---
# A HellaSwag-shaped stand-in
"""


def write_hellaswag(root: Path, records: list[dict], repo_id: str = "Rowan/hellaswag"):
    """A HellaSwag-shaped dataset repository: its validation split as parquet, in HellaSwag's columns."""
    folder = root / "datasets" / repo_id
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(HELLASWAG_README)
    columns = ("ind", "activity_label", "ctx_a", "ctx_b", "ctx", "endings", "source_id", "split", "split_type",
               "label")
    table = pa.table({name: [record.get(name) for record in records] for name in columns})
    pq.write_table(table, folder / "data" / "validation-00000-of-00001.parquet")


def write_tokenizer_repo(root: Path, tokenizer, repo_id: str = "openai-community/gpt2"):
    """A model repository holding a tokenizer's files, as `openai-community/gpt2` holds GPT-2's."""
    tokenizer.save_pretrained(root / "models" / repo_id)


def prepare_command(hub: HubStandIn, home: Path, args: list[str]) -> list[str]:
    """`prepare_data.py args` as a command that talks to the stand-in, with its own caches under `home`."""
    variables = [f"{key}={value}" for key, value in hub.environment(home).items()]
    return ["env", *variables, "OMP_NUM_THREADS=1", sys.executable, "prepare_data.py", *args]


def readme_command(starts_with: str) -> list[str]:
    """The README's first command line that starts with these words, as arguments after the script."""
    return shlex.split(readme_lines(starts_with)[0])[2:]
