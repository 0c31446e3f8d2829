"""The registry of public releases and the resumable downloader.

The downloader is tested against a real HTTP server on 127.0.0.1 (http.server in a
thread) that drops the connection half-way through the first response and answers the
retry's Range request with the rest, as a flaky mirror does.
"""

from __future__ import annotations

import http.server
import os
import re
import threading

import pytest

from demoset.cli.main import main
from demoset.download import (
    MOMART_RELEASES,
    ROBOMIMIC_RELEASES,
    download_file,
    download_release,
    find_releases,
    part_path,
)
from demoset.errors import DownloadError

PAYLOAD = os.urandom(300_000) + b"end-of-file"


class FlakyServer:
    """Serves PAYLOAD at /data.hdf5; the first `drops` responses stop half-way."""

    def __init__(
        self,
        payload: bytes = PAYLOAD,
        drops: int = 1,
        honour_range: bool = True,
        announce: int | None = None,
    ):
        self.payload = payload
        self.drops = drops
        self.honour_range = honour_range
        self.announce = announce
        self.requests: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                data = server.payload
                rng = self.headers.get("Range")
                server.requests.append(rng)
                start = 0
                match = re.match(r"bytes=(\d+)-", rng or "")
                if match and server.honour_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(server.announce or len(body)))
                self.end_headers()
                if server.drops > 0:
                    server.drops -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data.hdf5"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_resumes_after_dropped_connection(tmp_path):
    dest = tmp_path / "sub" / "data.hdf5"
    seen = []
    with FlakyServer(drops=1) as server:
        result = download_file(
            server.url, dest, progress=lambda d, t: seen.append((d, t)), retry_wait=0
        )
    assert dest.read_bytes() == PAYLOAD
    assert not os.path.exists(part_path(dest))
    assert result.attempts == 2 and result.size == len(PAYLOAD)
    # the retry asked only for the missing bytes
    assert server.requests[0] is None
    assert server.requests[1] == f"bytes={len(PAYLOAD) // 2}-"
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_interrupted_download_leaves_no_final_file_and_resumes_later(tmp_path):
    dest = tmp_path / "data.hdf5"
    with FlakyServer(drops=10) as server:
        with pytest.raises(DownloadError, match="run again to resume") as info:
            download_file(server.url, dest, retries=1, retry_wait=0)
    assert str(dest) in str(info.value)
    assert not dest.exists()
    half = os.path.getsize(part_path(dest))
    assert 0 < half < len(PAYLOAD)
    assert PAYLOAD.startswith(open(part_path(dest), "rb").read())
    with FlakyServer(drops=0) as server:
        result = download_file(server.url, dest, retry_wait=0)
    assert result.resumed_from == half
    assert server.requests == [f"bytes={half}-"]
    assert dest.read_bytes() == PAYLOAD


def test_server_without_range_support_restarts_cleanly(tmp_path):
    dest = tmp_path / "data.hdf5"
    with FlakyServer(drops=1, honour_range=False) as server:
        download_file(server.url, dest, retry_wait=0)
    assert dest.read_bytes() == PAYLOAD


def test_size_mismatch_refused(tmp_path):
    dest = tmp_path / "data.hdf5"
    with FlakyServer(drops=0) as server:
        with pytest.raises(DownloadError, match="expected; refused"):
            download_file(server.url, dest, expected_size=len(PAYLOAD) + 1, retry_wait=0)
    assert not dest.exists()
    # a complete .part of the wrong size is never renamed into place either
    with FlakyServer(drops=0) as server:
        result = download_file(server.url, dest, expected_size=len(PAYLOAD), retry_wait=0)
    assert result.size == len(PAYLOAD) and dest.read_bytes() == PAYLOAD


def test_existing_file_and_bad_urls_refused(tmp_path):
    dest = tmp_path / "data.hdf5"
    dest.write_bytes(b"mine")
    with pytest.raises(DownloadError, match="already exists"):
        download_file("http://127.0.0.1:9/x", dest)
    assert dest.read_bytes() == b"mine"
    with pytest.raises(DownloadError, match="only http"):
        download_file("file:///etc/passwd", tmp_path / "p")


def test_registry_matches_robomimic_0_3_0():
    import robomimic

    ours = {(r.task, r.dataset_type, r.hdf5_type): (r.url, r.horizon) for r in ROBOMIMIC_RELEASES}
    theirs = {
        (task, dtype, htype): (entry["url"], entry["horizon"])
        for task, types in robomimic.DATASET_REGISTRY.items()
        for dtype, htypes in types.items()
        for htype, entry in htypes.items()
    }
    assert ours == theirs
    ours_mm = {(r.task, r.dataset_type): (r.url, r.size_gb) for r in MOMART_RELEASES}
    theirs_mm = {
        (task, dtype): (entry["url"], entry["size"])
        for task, types in robomimic.MOMART_DATASET_REGISTRY.items()
        for dtype, entry in types.items()
    }
    assert ours_mm == theirs_mm


def test_selection():
    (rel,) = find_releases(["lift"], ["ph"], ["low_dim"])
    assert rel.url.endswith("/lift/ph/low_dim_v141.hdf5") and rel.horizon == 400
    assert {r.task for r in find_releases(["sim"], ["ph"], ["raw"])} == {
        "lift",
        "can",
        "square",
        "transport",
        "tool_hang",
    }
    momart = find_releases(["momart"], None, None)
    assert len(momart) == 5 and {r.dataset_type for r in momart} == {"expert"}
    with pytest.raises(DownloadError, match="unknown task"):
        find_releases(["lifty"])
    with pytest.raises(DownloadError, match="no public file"):
        download_release(find_releases(["lift"], ["ph"], ["image"])[0], "/nonexistent")


def test_cli_download_with_url_override(tmp_path, capsys):
    with FlakyServer(drops=1) as server:
        rc = main(
            [
                "download",
                "--task",
                "lift",
                "--type",
                "ph",
                "--hdf5-type",
                "low_dim",
                "--dir",
                str(tmp_path),
                "--url",
                server.url,
            ]
        )
    assert rc == 0
    out = tmp_path / "lift" / "ph" / "low_dim_v141.hdf5"
    assert out.read_bytes() == PAYLOAD
    assert "downloaded" in capsys.readouterr().out
    # robomimic's flags, dry run: nothing written
    rc = main(
        [
            "download",
            "--tasks",
            "can",
            "--dataset_types",
            "mh",
            "--hdf5_types",
            "raw",
            "--download_dir",
            str(tmp_path / "dry"),
            "--dry_run",
        ]
    )
    assert rc == 0 and not (tmp_path / "dry").exists()
    assert "can/mh/demo_v141.hdf5" in capsys.readouterr().out
    # a size mismatch is one line on stderr and exit code 2
    with FlakyServer(drops=0) as server:
        rc = main(["download", "--url", server.url, "--dir", str(tmp_path / "x"), "--size", "5"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refused" in err
    assert not (tmp_path / "x" / "data.hdf5").exists()
