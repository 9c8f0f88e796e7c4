"""A hub dataset's files, fetched for preparation: pinned to one commit, listed with the hub's own digests, downloaded
in parallel with bounded retries, and checked before any of their bytes become tokens.

The steps, in the order `corpus.load_corpus` takes them:
1. `locate`: the revision resolved to its commit; the configuration's files for the split (as `datasets` resolves
   them from the repository's card), each with its size and LFS sha256;
2. `check_disk_space`: the download, the Arrow cache, the token cache and the output, estimated from those sizes,
   against the free space where each will be written;
3. `download` (cached mode): `snapshot_download` of exactly those files in `num_proc` threads, then every file
   checked against its digest; or `stream_files` (`--streaming`): one file at a time, checked, read, deleted.

A transient fault (429, 5xx, a timeout, a dropped connection) is retried with a doubling wait, or the server's
`Retry-After`; `huggingface_hub` already resumes a body cut half-way. A fault that outlasts the retries ends in
`SourceUnavailable`, naming the file and the status; finished downloads stay in the hub cache, so the same command
run again fetches only what is missing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import datasets
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download, try_to_load_from_cache
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from preparation import PrepareError, SourceUnavailable

TRANSIENT_STATUSES = (408, 429, 500, 502, 503, 504)
# Disk estimates before anything is downloaded, from the files' sizes alone. Parquet (or gzip) holds English web
# text at about 2x; GPT-2's BPE averages 4-4.5 bytes of English a token. Both lean towards asking for more space.
TEXT_BYTES_PER_FILE_BYTE = 2.0
TEXT_BYTES_PER_TOKEN = 4.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often a request that failed for a transient reason is tried, and how long to wait between tries."""

    attempts: int = 5
    first_wait: float = 2.0  # seconds; doubles each time, up to max_wait, unless the server sends Retry-After
    max_wait: float = 60.0

    def wait(self, attempt: int, error: BaseException) -> float:
        response = getattr(http_error(error), "response", None)
        retry_after = response.headers.get("Retry-After") if response is not None else None
        if retry_after is not None and retry_after.isdigit():
            return min(float(retry_after), self.max_wait)
        return min(self.first_wait * 2 ** (attempt - 1), self.max_wait)


@dataclass(frozen=True)
class HubFile:
    path: str  # in the repository
    size: int
    sha256: str | None  # the LFS digest; None for a file kept in git itself
    git_blob_id: str


@dataclass(frozen=True)
class HubDataset:
    repo_id: str
    config: str | None
    split: str
    commit: str
    builder: str  # the `datasets` builder that reads its files: parquet, json, csv, text
    files: tuple[HubFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


# --- faults ---

def causes(error: BaseException | None) -> Iterator[BaseException]:
    """The error and each one behind it: `huggingface_hub` wraps a failed metadata request in other exceptions."""
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def http_error(error: BaseException) -> HfHubHTTPError | None:
    """The HTTP error behind `error`, if there is one."""
    return next((e for e in causes(error) if isinstance(e, HfHubHTTPError) and e.response is not None), None)


def is_transient(error: BaseException) -> bool:
    """A fault that may pass: a throttled or failing server, a timeout, a connection that broke."""
    found = http_error(error)
    if found is not None:
        return found.response.status_code in TRANSIENT_STATUSES
    # httpx's transport errors (connect, read, timeouts, a closed connection), named rather than imported: the
    # HTTP library under huggingface_hub has changed its package name before
    return any(isinstance(e, (ConnectionError, TimeoutError))
               or any(kind.__name__ == "TransportError" for kind in type(e).__mro__) for e in causes(error))


def describe(error: BaseException) -> str:
    found = http_error(error)
    if found is not None:
        return f"HTTP {found.response.status_code}"
    return type(error).__name__


def with_retries(call: Callable, policy: RetryPolicy, what: str):
    """`call()`, tried again after a transient fault, at most `policy.attempts` times in all."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except Exception as error:
            if not is_transient(error):
                raise
            if attempt == policy.attempts:
                raise SourceUnavailable(
                    f"the hub kept failing on {what}: {describe(error)} after {policy.attempts} attempts; files "
                    "already downloaded are kept, and running the same command again resumes") from None
            wait = policy.wait(attempt, error)
            print(f"hub: {what}: {describe(error)}; trying again in {wait:g} s ({attempt}/{policy.attempts - 1})",
                  file=sys.stderr)
            time.sleep(wait)


def refusal(error: BaseException, repo_id: str) -> PrepareError | None:
    """One line for a repository the hub will not give: gated, private, missing, or no such revision."""
    login = "log in with `hf auth login` (or set HF_TOKEN)"
    if isinstance(error, GatedRepoError):
        return PrepareError(f"{repo_id} is gated: accept its terms on its page on the hub, then {login}")
    if isinstance(error, RepositoryNotFoundError):
        return PrepareError(f"no dataset {repo_id} on {constants.ENDPOINT}; if it is private, {login}")
    if isinstance(error, RevisionNotFoundError):
        return PrepareError(f"{repo_id} has no revision named in --dataset_revision: {error.server_message or ''}")
    found = http_error(error)
    if found is not None and found.response.status_code in (401, 403):
        return PrepareError(f"the hub refused access to {repo_id} (HTTP {found.response.status_code}): {login}, "
                            "and accept the dataset's terms if it has any")
    return None


def asking_the_hub(call: Callable, policy: RetryPolicy, repo_id: str, what: str):
    try:
        return with_retries(call, policy, what)
    except SourceUnavailable:
        raise
    except Exception as error:
        raise (refusal(error, repo_id) or error) from None


# --- 1. locate ---

def locate(repo_id: str, config: str | None, split: str, revision: str | None, data_files: list[str] | None,
           policy: RetryPolicy) -> HubDataset:
    """The dataset's files for `split` at one commit (the branch's head when no revision is given)."""
    api = HfApi()
    info = asking_the_hub(lambda: api.dataset_info(repo_id, revision=revision), policy, repo_id,
                          f"the dataset {repo_id}")
    try:
        builder = asking_the_hub(
            lambda: datasets.load_dataset_builder(repo_id, config, revision=info.sha, data_files=data_files),
            policy, repo_id, f"the file list of {repo_id}")
    except ValueError:
        configs = datasets.get_dataset_config_names(repo_id, revision=info.sha)
        if config in configs:  # not an unknown configuration: something else is wrong
            raise
        raise PrepareError(f"{repo_id} has no configuration {config!r}; it has {configs}") from None
    except FileNotFoundError as error:  # data_files that match nothing, or a repository without data files
        raise PrepareError(f"no data files in {repo_id} at {info.sha[:12]}: {error}") from None
    files_by_split = builder.config.data_files or {}
    if split not in files_by_split:
        raise PrepareError(f"{repo_id} ({builder.config.name}) has no split {split!r}; it has {sorted(files_by_split)}")
    marker = f"@{info.sha}/"
    paths = [url.split(marker, 1)[1] for url in files_by_split[split]]
    listed = asking_the_hub(lambda: api.get_paths_info(repo_id, paths, repo_type="dataset", revision=info.sha),
                            policy, repo_id, f"the file digests of {repo_id}")
    by_path = {entry.path: entry for entry in listed}
    files = tuple(HubFile(p, by_path[p].size, by_path[p].lfs.sha256 if by_path[p].lfs else None, by_path[p].blob_id)
                  for p in paths)
    return HubDataset(repo_id, builder.config.name, split, info.sha, builder.name, files)


# --- 2. disk space ---

def check_disk_space(dataset: HubDataset, datasets_cache: str | None, output_dir: Path, streaming: bool,
                     dtype_bytes: int = 2):
    """Refuse, before anything is downloaded, a preparation the disks cannot hold (each file system on its own)."""
    missing = sum(f.size for f in dataset.files if cached_path(dataset, f) is None)
    text_bytes = dataset.total_bytes * TEXT_BYTES_PER_FILE_BYTE
    token_bytes = int(text_bytes / TEXT_BYTES_PER_TOKEN * dtype_bytes)
    hub_cache = Path(constants.HF_HUB_CACHE)
    arrow_cache = Path(datasets_cache or datasets.config.HF_DATASETS_CACHE)
    if streaming:  # one source file at a time, beside the output
        needs = [("one source file at a time", hub_cache, max(f.size for f in dataset.files)),
                 ("output", output_dir, token_bytes)]
    else:
        needs = [("download", hub_cache, missing), ("Arrow cache", arrow_cache, int(text_bytes)),
                 ("token cache", arrow_cache, token_bytes), ("output", output_dir, token_bytes)]
    by_device: dict[int, tuple[Path, list]] = {}
    for name, folder, size in needs:
        existing = nearest_existing(folder)
        by_device.setdefault(os.stat(existing).st_dev, (existing, []))[1].append((name, size))
    for existing, parts in by_device.values():
        needed, free = sum(size for _, size in parts), shutil.disk_usage(existing).free
        if needed > free:
            detail = ", ".join(f"{name} {gigabytes(size)}" for name, size in parts)
            hint = "" if streaming else f"; --streaming needs only the output, about {gigabytes(token_bytes)}"
            raise PrepareError(f"not enough disk space on {existing}: this preparation needs about {gigabytes(needed)} "
                               f"there ({detail}, estimated from {gigabytes(dataset.total_bytes)} of source files) "
                               f"and {gigabytes(free)} is free{hint}")


def nearest_existing(folder: Path) -> Path:
    folder = Path(folder).expanduser().absolute()
    while not folder.exists():
        folder = folder.parent
    return folder


def gigabytes(size: float) -> str:
    return f"{size / 1e9:,.1f} GB"


# --- 3. download and check ---

def cached_path(dataset: HubDataset, file: HubFile) -> str | None:
    found = try_to_load_from_cache(dataset.repo_id, file.path, revision=dataset.commit, repo_type="dataset")
    return found if isinstance(found, str) else None


def digest_matches(path: str | Path, file: HubFile) -> bool:
    """The file's bytes against the hub's digest: LFS sha256, or git's blob id for a file kept in git."""
    digest = hashlib.sha256() if file.sha256 else hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as handle:
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest() == (file.sha256 or file.git_blob_id)


def forget(path: str | Path):
    """Remove a downloaded file from the hub cache: its blob and the snapshot's link to it."""
    path = Path(path)
    path.resolve().unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def fetching_again(files: list[HubFile]):
    print(f"hub: {len(files)} file(s) did not match the hub's digest ({files[0].path}); deleted, fetching again",
          file=sys.stderr)


def refuse_wrong_body(dataset: HubDataset, file: HubFile):
    raise SourceUnavailable(f"{dataset.repo_id}/{file.path} at {dataset.commit[:12]} arrived twice with content that "
                            f"does not match the hub's digest ({file.sha256 or file.git_blob_id}); nothing was "
                            "tokenized from it, and running the same command again fetches it again")


def verified(fetch: Callable[[], list[str]], dataset: HubDataset, files: list[HubFile], workers: int = 1) -> list[str]:
    """`fetch()` the files (their local paths, in `files`' order) and check each against its digest, in `workers`
    threads (hashlib releases the GIL). A file whose content does not match is deleted and fetched once more,
    then refused."""
    for round_ in range(2):
        local = fetch()
        with ThreadPoolExecutor(workers) as pool:
            matches = list(pool.map(digest_matches, local, files))
        wrong = [(path, file) for path, file, ok in zip(local, files, matches, strict=True) if not ok]
        if not wrong:
            return local
        for path, _ in wrong:
            forget(path)
        if round_ == 1:
            refuse_wrong_body(dataset, wrong[0][1])
        fetching_again([file for _, file in wrong])
    raise AssertionError("unreachable")


def download(dataset: HubDataset, num_proc: int, policy: RetryPolicy) -> list[str]:
    """Every file of the dataset in the hub cache, checked against its digest, in the repository's order.

    `snapshot_download` fetches them in `num_proc` threads and skips those already cached, so a retry or a second
    run fetches only what is missing."""
    patterns = [f.path for f in dataset.files]
    workers = max(1, min(num_proc, len(patterns)))

    def fetch() -> list[str]:
        folder = with_retries(
            lambda: snapshot_download(dataset.repo_id, repo_type="dataset", revision=dataset.commit,
                                      allow_patterns=patterns, max_workers=workers),
            policy, f"{dataset.repo_id} ({len(patterns)} files)")
        return [str(Path(folder) / path) for path in patterns]

    return verified(fetch, dataset, list(dataset.files), workers)


def fetch_one(dataset: HubDataset, file: HubFile, policy: RetryPolicy) -> str:
    """One file in the hub cache, checked against its digest."""
    def fetch() -> list[str]:
        return [with_retries(lambda: hf_hub_download(dataset.repo_id, file.path, repo_type="dataset",
                                                     revision=dataset.commit),
                             policy, f"{dataset.repo_id}/{file.path}")]

    return verified(fetch, dataset, [file])[0]


def stream_files(dataset: HubDataset, text_column: str, policy: RetryPolicy) -> datasets.IterableDataset:
    """The documents, one source file at a time: fetched and checked, read in order, then deleted, so the disk
    holds one file of the source beside the output."""
    return datasets.IterableDataset.from_generator(
        _documents_of_files, gen_kwargs={"dataset": dataset, "text_column": text_column, "policy": policy})


def _documents_of_files(dataset: HubDataset, text_column: str, policy: RetryPolicy) -> Iterator[dict]:
    for file in dataset.files:
        path = fetch_one(dataset, file, policy)
        local = datasets.load_dataset(dataset.builder, data_files=[path], split="train", streaming=True)
        yield from local
        forget(path)  # only once every document of it was read: a stream closed early finds it again
