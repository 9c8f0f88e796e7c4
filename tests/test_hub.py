"""preparation/hub.py: faults that outlast the retries, refusals, the disk check, parallel downloads and the pinned
revision, each against a stand-in of the hub (support/hub.py) that counts what was asked of it."""

import hashlib
import json
import os
import shutil
from contextlib import ExitStack

import httpx2
import pytest
from huggingface_hub.errors import HfHubHTTPError
from support.hub import GATED, PRIVATE, HubStandIn, fineweb_edu_shard, prepare_command, readme_command
from support.runs import run_together

from formats.packed_data import FINEWEB_EDU
from preparation.hub import HubFile, RetryPolicy, digest_matches, is_transient
from training.exit_codes import ExitCode

QUICK = ["--num_proc", "2", "--download_retries", "2", "--download_retry_wait", "0.1"]


def run_against(hubs: dict[str, HubStandIn], tmp_path, args: dict[str, list[str]]) -> dict:
    """prepare_data.py once per named stand-in, all at once, each with its own caches and output directory."""
    commands = [prepare_command(hubs[name], tmp_path / f"home-{name}",
                                ["--output_dir", str(tmp_path / name), *QUICK, *args[name]]) for name in hubs]
    return dict(zip(hubs, run_together(commands, env=dict(os.environ), timeout=240), strict=True))


def last_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


def test_a_fault_that_outlasts_the_retries_ends_in_one_line_and_the_next_run_fetches_only_what_is_missing(
        fineweb_hub, tmp_path):
    first, second, third = fineweb_hub.shards
    with HubStandIn(fineweb_hub.root) as failing, HubStandIn(fineweb_hub.root) as wrong:
        failing.fail(second, 500, times=100)
        wrong.corrupt(first, times=2)
        results = run_against({"failing": failing, "wrong": wrong}, tmp_path, {"failing": [], "wrong": []})
        for name, result in results.items():
            assert result.returncode == ExitCode.SOURCE_UNAVAILABLE, result.stderr[-3000:]
            assert not (tmp_path / name).exists() and not (tmp_path / f"{name}.tmp").exists()
        line = last_line(results["failing"])
        assert line.startswith("prepare_data.py: error: the hub kept failing on")
        assert "HTTP 500 after 2 attempts" in line
        assert "running the same command again resumes" in line
        line = last_line(results["wrong"])
        assert f"{FINEWEB_EDU}/{first}" in line and "does not match the hub's digest" in line
        assert failing.downloads(second) == 2 and wrong.downloads(first) == 2

        failing.clear_faults()
        again = run_against({"failing": failing}, tmp_path, {"failing": []})["failing"]
        assert again.returncode == 0, again.stderr[-3000:]
        # the files that had arrived were kept: each fetched once in both runs together
        assert [failing.downloads(path) for path in (first, second, third)] == [1, 3, 1]


def test_the_hub_refuses_in_one_line_that_says_what_to_do(fineweb_hub, tmp_path):
    names = ("gated", "private", "no_config", "no_revision")
    with ExitStack() as serving:
        hubs = {name: serving.enter_context(HubStandIn(fineweb_hub.root)) for name in names}
        hubs["gated"].set_access(FINEWEB_EDU, GATED)
        hubs["private"].set_access(FINEWEB_EDU, PRIVATE)
        results = run_against(hubs, tmp_path, {"gated": [], "private": [], "no_config": ["--dataset_config", "10BT"],
                                               "no_revision": ["--dataset_revision", "v9"]})
    expected = {"gated": "is gated: accept its terms on its page on the hub, then log in with `hf auth login`",
                "private": f"no dataset {FINEWEB_EDU} on http://127.0.0.1:",
                "no_config": "has no configuration '10BT'; it has ['default', 'sample-10BT']",
                "no_revision": "has no revision named in --dataset_revision"}
    for name, result in results.items():
        assert result.returncode == ExitCode.BAD_SETTING, result.stderr[-3000:]
        assert expected[name] in last_line(result)
        assert not any(r.path.endswith(".parquet") and r.method == "GET" for r in hubs[name].requests)


def test_a_disk_that_cannot_hold_the_preparation_is_refused_before_the_download(fineweb_hub, tmp_path):
    first = next(iter(fineweb_hub.shards))
    with HubStandIn(fineweb_hub.root) as huge, HubStandIn(fineweb_hub.root) as streamed:
        for hub in (huge, streamed):
            hub.advertise(first, 10**15)  # a petabyte: more than any disk here
        results = run_against({"huge": huge, "streamed": streamed}, tmp_path,
                              {"huge": [], "streamed": ["--streaming", "--val_tokens", "1000"]})
    line = last_line(results["huge"])
    assert results["huge"].returncode == ExitCode.BAD_SETTING
    # the estimate: 2 bytes of text a byte of parquet, 4 bytes of text a token, 2 bytes a token
    assert "not enough disk space on /" in line and "(download 1,000,000.0 GB, Arrow cache 2,000,000.0 GB" in line
    assert "--streaming needs only the output, about 1,000,000.0 GB" in line
    assert "one source file at a time 1,000,000.0 GB" in last_line(results["streamed"])
    assert not any(r.method == "GET" and r.path.endswith(".parquet") for hub in (huge, streamed) for r in hub.requests)


def test_num_proc_downloads_files_in_parallel_and_converts_them_in_parallel(fineweb_hub, tmp_path):
    with HubStandIn(fineweb_hub.root) as one, HubStandIn(fineweb_hub.root) as three:
        for hub in (one, three):
            for path in fineweb_hub.shards:
                hub.slow(path, seconds=1.0)
        results = run_against({"one": one, "three": three}, tmp_path,
                              {"one": ["--num_proc", "1"], "three": ["--num_proc", "3"]})
        for result in results.values():
            assert result.returncode == 0, result.stderr[-3000:]
        assert (one.most_parallel, three.most_parallel) == (1, 3)
    arrow_files = {name: sorted(p.name for p in (tmp_path / f"home-{name}" / "datasets").rglob("parquet-train*.arrow"))
                   for name in results}  # datasets writes one Arrow file a conversion process
    assert arrow_files == {"one": ["parquet-train.arrow"],
                           "three": [f"parquet-train-0000{i}-of-00003.arrow" for i in range(3)]}
    metadata = {name: json.loads((tmp_path / name / "prepare_metadata.json").read_text()) for name in results}
    assert metadata["one"]["splits"] == metadata["three"]["splits"]
    assert metadata["one"]["rows_sha256"] == metadata["three"]["rows_sha256"]


def test_the_commit_is_recorded_and_a_pinned_revision_never_becomes_other_data(fineweb_hub, tmp_path):
    root = tmp_path / "hub"
    shutil.copytree(fineweb_hub.root, root)
    with HubStandIn(root) as hub:
        before = hub.repo("datasets", FINEWEB_EDU).commit
        # the README's command that prepares the same data again, its COMMIT this one
        again = readme_command("python prepare_data.py --output_dir data/fineweb_edu_10B --num_proc 32 --dataset_rev")
        again[again.index("COMMIT")] = before
        again[again.index("data/fineweb_edu_10B")] = str(tmp_path / "pinned")
        (result,) = run_together([prepare_command(hub, tmp_path / "home-pinned", again)], env=dict(os.environ))
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"at commit {before}" in result.stdout
        source = json.loads((tmp_path / "pinned" / "prepare_metadata.json").read_text())["source"]
        assert source["dataset_revision"] == before and source["dataset_config"] == "sample-10BT"

        last = list(fineweb_hub.shards)[-1]  # the branch moves on: one document fewer in the last file
        (root / "datasets" / FINEWEB_EDU / last).write_bytes(fineweb_edu_shard(fineweb_hub.shards[last][:-1], 2))
        after = hub.repo("datasets", FINEWEB_EDU).commit
        results = run_against({"head": hub, "old": hub}, tmp_path, {"head": [], "old": ["--dataset_revision", before]})
    assert results["head"].returncode == 0, results["head"].stderr[-3000:]
    metadata = json.loads((tmp_path / "head" / "prepare_metadata.json").read_text())
    assert metadata["source"]["dataset_revision"] == after != before
    assert sum(s["documents"] for s in metadata["splits"].values()) == len(fineweb_hub.documents) - 1
    # the stand-in keeps only its newest commit: the old one is refused, never answered with the new files
    assert results["old"].returncode == ExitCode.BAD_SETTING
    assert "has no revision named in --dataset_revision" in last_line(results["old"])


# --- units: what is transient, how long to wait, what a digest is ---

def http_failure(status: int, headers: dict | None = None) -> HfHubHTTPError:
    request = httpx2.Request("GET", "http://hub/x")
    return HfHubHTTPError("failed", response=httpx2.Response(status, headers=headers, request=request))


def test_transient_faults_are_throttling_server_errors_timeouts_and_broken_connections():
    for status in (408, 429, 500, 502, 503, 504):
        assert is_transient(http_failure(status))
    for status in (401, 403, 404):
        assert not is_transient(http_failure(status))
    wrapped = FileNotFoundError("could not locate the file")
    wrapped.__cause__ = http_failure(503)
    assert is_transient(wrapped)  # huggingface_hub's wrapping of a failed metadata request
    assert is_transient(httpx2.ReadTimeout("slow")) and is_transient(ConnectionResetError())
    assert is_transient(httpx2.RemoteProtocolError("peer closed connection without sending complete message body"))
    assert not is_transient(ValueError("bad"))
    status = httpx2.HTTPStatusError("404", request=httpx2.Request("GET", "http://hub/x"), response=httpx2.Response(404))
    assert not is_transient(status)  # a refusal, not a broken connection


def test_the_wait_doubles_up_to_its_cap_and_the_servers_retry_after_wins():
    policy = RetryPolicy(attempts=6, first_wait=2.0, max_wait=10.0)
    assert [policy.wait(n, http_failure(503)) for n in range(1, 5)] == [2.0, 4.0, 8.0, 10.0]
    assert policy.wait(1, http_failure(429, {"Retry-After": "7"})) == 7.0
    assert policy.wait(1, http_failure(429, {"Retry-After": "7000"})) == 10.0


@pytest.mark.parametrize("in_lfs", [True, False])
def test_a_file_matches_the_hubs_digest_only_with_its_exact_bytes(tmp_path, in_lfs):
    data = b"some parquet bytes"
    path = tmp_path / "f"
    path.write_bytes(data)
    listed = HubFile("f", len(data), hashlib.sha256(data).hexdigest() if in_lfs else None,
                     hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest())  # git's own blob id
    assert digest_matches(path, listed)
    path.write_bytes(data[:-1] + b"!")
    assert not digest_matches(path, listed)
