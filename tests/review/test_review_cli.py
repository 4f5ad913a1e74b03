"""`mfpipe review OUT` as a user starts it: it prints its URL once (with the token beyond loopback, never
anywhere else), serves until Ctrl-C, and says clearly when it cannot listen."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from support.fixtures_review import copy_review_corpus
from support.helpers import MFPIPE

pytestmark = pytest.mark.slow  # the curator session's corpus (real ingest + MIR runs)


def _first_line(proc: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip():
            return line.strip()
        assert proc.poll() is None, proc.stderr.read()
    raise AssertionError("mfpipe review printed no URL")


def test_review_command_prints_its_url_once_and_stops_on_ctrl_c(review_corpus, tmp_path):
    out = copy_review_corpus(review_corpus, tmp_path / "out").out
    proc = subprocess.Popen([*MFPIPE, "review", str(out), "--host", "0.0.0.0", "--port", "0", "--reviewer", "carol"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = _first_line(proc)
        token = re.fullmatch(r"http://[^/]+:(\d+)/\?token=(\S+)", url)
        assert token, url
        local = f"http://127.0.0.1:{token.group(1)}/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(local, timeout=10)
        assert refused.value.code == 401
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())  # keeps the cookie
        with browser.open(f"{local}?token={token.group(2)}", timeout=10) as page:  # follows the 303
            assert page.status == 200 and page.url == local and "carol" in page.read().decode()
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in stderr  # Ctrl-C: a clean stop, the usual code
    assert token.group(2) not in stdout + stderr  # printed once: the URL line, nothing else
    assert "carol" in stderr and str(out) in stderr


def test_review_command_says_when_it_cannot_listen(review_corpus, tmp_path):
    from typer.testing import CliRunner

    from mfpipe.pipeline.cli import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        busy = CliRunner().invoke(app, ["review", str(review_corpus.out), "--port", str(port)])
    assert busy.exit_code == 2 and "cannot listen on 127.0.0.1" in busy.output
    empty = CliRunner().invoke(app, ["review", str(tmp_path / "nothing")])
    assert empty.exit_code == 2 and "nothing to review" in empty.output
