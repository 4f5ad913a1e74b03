"""`mfpipe review` in a real browser (Debian Chromium through Selenium) against the real server.

A curator opens the list, filters it by a MIR flag, opens the song, plays it (the audio element's time
advances), seeks from a lyric word, drops a QA item, edits the caption, decides one with the keyboard,
reloads and finds everything kept; the export applies it. Hostile file names and texts are shown, never
run; only the corpus's own audio is served; beyond loopback the server wants its token.
"""

from __future__ import annotations

import http.client
import io
import re
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest
import soundfile as sf
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from support.fixtures_review import (
    HOSTILE_NAME,
    HOSTILE_QUESTION,
    HOSTILE_TEXT,
    HOSTILE_WORD,
    copy_review_corpus,
    review_server,
)
from support.helpers import run_mfpipe

pytestmark = pytest.mark.slow  # the curator session's corpus (real ingest + MIR runs), a browser, a server

CAPTION_EDIT = "A pop song at 120 BPM in C major: acoustic guitar, electric bass and piano, intro to chorus."


@pytest.fixture(scope="module")
def site(review_corpus, tmp_path_factory):
    corpus = copy_review_corpus(review_corpus, tmp_path_factory.mktemp("review-browser") / "out")
    with review_server(corpus.out, "alice") as url:
        yield corpus, url.rstrip("/")


def _wait(browser, condition, timeout: float = 15.0, message: str = ""):
    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(lambda d: condition(d), message)


def _js(browser, script: str, *args):
    return browser.execute_script(script, *args)


def _card(browser, key: str):
    return browser.find_element(By.CSS_SELECTOR, f'article.item[data-key="{key}"]')


def _errors(browser) -> list[dict]:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def _get(url: str, path: str, headers: dict | None = None, method: str = "GET", body: bytes | None = None):
    """A raw request: the path goes out exactly as written (no client-side clean-up of `..`)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_list_filters_by_flag_and_shows_hostile_names_as_text(browser, site):
    corpus, url = site
    browser.get(url + "/")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.songs tr.song")
    names = [r.find_element(By.CSS_SELECTOR, ".open").text for r in rows]
    assert len(rows) == 7 and HOSTILE_NAME in names and "not_a_song.wav" in names  # every input, rejects too
    reject = browser.find_element(By.CSS_SELECTOR, 'tr.song:not([data-href]) .reject').text
    assert "ingest: not_audio" in reject
    assert browser.find_elements(By.CSS_SELECTOR, "table.songs img") == []
    assert _js(browser, "return window.__pwned") is None

    Select(browser.find_element(By.ID, "filter-flag")).select_by_value("any")  # the form submits on change
    _wait(browser, lambda d: "flag=any" in d.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "table.songs tr.song")
    assert [r.get_attribute("data-song") for r in rows] == [corpus.flagged]
    assert "bpm" in rows[0].find_element(By.CSS_SELECTOR, ".flags").text
    Select(browser.find_element(By.ID, "filter-flag")).select_by_value("none")
    _wait(browser, lambda d: "flag=none" in d.current_url)
    shown = {r.get_attribute("data-song") for r in browser.find_elements(By.CSS_SELECTOR, "tr.song")}
    assert corpus.flagged not in shown and len(shown) == 6
    assert not _errors(browser)


def test_a_curator_reviews_a_song_and_the_export_follows(browser, site):
    corpus, url = site
    sid = corpus.flagged
    browser.get(url + "/?flag=bpm")
    browser.find_element(By.CSS_SELECTOR, "a.open").click()
    _wait(browser, lambda d: f"/song/{sid}" in d.current_url and "flag=bpm" in d.current_url)
    mark = browser.find_element(By.CSS_SELECTOR, f'article[data-key="{sid}:caption"] mark.flagged')
    assert mark.text == corpus.bpm_flag and "beat tracker measured" in mark.get_attribute("title")
    assert browser.find_elements(By.CSS_SELECTOR, f'article[data-key="{sid}:qa:{corpus.key_flag_index}"] mark')

    # Play: the audio element's time advances.
    _js(browser, "document.getElementById('player').play()")
    _wait(browser, lambda d: _js(d, "return document.getElementById('player').currentTime") > 0.5,
          message="the audio did not play")
    # Seek from a lyric word (the first word is sung at 1.0 s).
    _js(browser, "const p = document.getElementById('player'); p.currentTime = 20;")
    _wait(browser, lambda d: _js(d, "return document.getElementById('player').currentTime") >= 20)
    word = browser.find_element(By.CSS_SELECTOR, "#lyrics .lyric")
    start = float(word.get_attribute("data-t"))
    word.click()
    _wait(browser, lambda d: start - 0.05 <= _js(d, "return document.getElementById('player').currentTime")
          < start + 3, message="clicking the lyric word did not seek")

    # Drop a QA item (button), edit the caption (editor), drop another with the keyboard and a reason tag.
    _card(browser, f"{sid}:qa:0").find_element(By.CSS_SELECTOR, 'button[data-action="drop"]').click()
    _wait(browser, lambda d: _card(d, f"{sid}:qa:0").get_attribute("data-state") == "drop")
    caption = _card(browser, f"{sid}:caption")
    caption.find_element(By.CSS_SELECTOR, 'button[data-action="edit"]').click()
    box = caption.find_element(By.CSS_SELECTOR, 'form[data-role="editor"] textarea[name="text"]')
    box.clear()
    box.send_keys(CAPTION_EDIT)
    caption.find_element(By.CSS_SELECTOR, 'form[data-role="editor"] button[type="submit"]').click()
    _wait(browser, lambda d: _card(d, f"{sid}:caption").get_attribute("data-state") == "edit")
    _card(browser, f"{sid}:qa:3").find_element(By.CSS_SELECTOR, ".question").click()  # focus the item
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("2")  # reason tag 2: "not in the audio"
    body.send_keys("x")
    _wait(browser, lambda d: _card(d, f"{sid}:qa:3").get_attribute("data-state") == "drop")
    body.send_keys("y")  # the shortcut moved on to the next item: keep it
    _wait(browser, lambda d: _card(d, f"{sid}:qa:4").get_attribute("data-state") == "keep")

    browser.refresh()  # everything was committed at once
    _wait(browser, lambda d: _card(d, f"{sid}:qa:0").get_attribute("data-state") == "drop")
    caption = _card(browser, f"{sid}:caption")
    assert caption.get_attribute("data-state") == "edit"
    assert caption.find_element(By.CSS_SELECTOR, '[data-role="edited"] [data-field="text"]').text == CAPTION_EDIT
    qa3 = _card(browser, f"{sid}:qa:3")
    assert qa3.get_attribute("data-state") == "drop"
    assert Select(qa3.find_element(By.CSS_SELECTOR, 'select[data-role="reason"]')).first_selected_option \
        .get_attribute("value") == "not in the audio"
    assert _card(browser, f"{sid}:qa:4").get_attribute("data-state") == "keep"
    assert not _errors(browser)

    run_mfpipe("export", str(corpus.out))
    files = sorted((corpus.out / "export" / "mf_skills").glob("part-*.parquet"))
    rows = {r["id"]: r for r in pq.read_table(files).to_pylist()}
    assert f"{sid}:qa:0" not in rows and f"{sid}:qa:3" not in rows and f"{sid}:qa:4" in rows
    assert rows[f"{sid}:caption"]["answer"] == CAPTION_EDIT
    assert rows[f"{sid}:caption"]["provenance"][-1]["stage"] == "review"
    card = (corpus.out / "export" / "README.md").read_text()
    assert re.search(r"^\| mf_skills \| caption \| 1 \| 0 \| 0 \| 1 \| 0 \| 0 \|$", card, re.M)

    # Next song: `n` goes on through the filtered list (here: none left) or the whole list.
    browser.get(f"{url}/song/{sid}")
    nxt = browser.find_element(By.ID, "next-song").get_attribute("href")
    browser.find_element(By.TAG_NAME, "body").send_keys("n")
    _wait(browser, lambda d: d.current_url == nxt)


def test_hostile_texts_and_names_are_shown_never_run(browser, site):
    corpus, url = site
    browser.get(f"{url}/song/{corpus.hostile}")
    caption = _card(browser, f"{corpus.hostile}:caption").find_element(By.CSS_SELECTOR, ".text.original").text
    assert caption.endswith(HOSTILE_TEXT.strip())
    question = _card(browser, f"{corpus.hostile}:qa:0").find_element(By.CSS_SELECTOR, ".question").text
    assert question == HOSTILE_QUESTION
    assert HOSTILE_WORD in browser.find_element(By.ID, "lyrics").text
    assert "<i>B minor</i>" in _card(browser, f"{corpus.hostile}:qa:1").text
    injected = "#items script, #items img, #items svg, #items b:not(.answer-label), #lyrics svg, #lyrics *:not(.lyric)"
    assert _js(browser, f"return document.querySelectorAll('{injected}').length") == 0
    assert _js(browser, "return [window.__xss, window.__pwned]") == [None, None]
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in browser.page_source
    browser.get(f"{url}/song/{corpus.hostile_name}")
    assert browser.find_element(By.ID, "song-name").text == HOSTILE_NAME
    assert browser.title.startswith(HOSTILE_NAME)
    assert _js(browser, "return window.__pwned") is None
    assert not _errors(browser)


def test_a_format_browsers_cannot_play_is_transcoded(browser, site):
    corpus, url = site
    status, headers, body = _get(url, f"/audio/{corpus.aiff}", {"Range": "bytes=0-"})
    assert status == 206 and headers["content-type"] == "audio/wav"
    data, rate = sf.read(io.BytesIO(body))
    assert rate == 22050 and abs(len(data) / rate - 5.0) < 0.01  # the whole song, decoded
    status, headers, part = _get(url, f"/audio/{corpus.aiff}", {"Range": "bytes=1000-1999"})
    assert status == 206 and part == body[1000:2000] and headers["content-range"].endswith(f"/{len(body)}")
    browser.get(f"{url}/song/{corpus.aiff}")
    _wait(browser, lambda d: abs((_js(d, "return document.getElementById('player').duration") or 0) - 5.0) < 0.1,
          message="the browser could not load the transcoded audio")


def test_only_the_corpus_audio_is_served(site):
    corpus, url = site
    rejected = pq.read_table(sorted((corpus.out / "rejects" / "ingest").glob("*.parquet")))["song_id"][0].as_py()
    secret = b"[project]"  # what pyproject.toml would show
    for path in ("/audio/../../../pyproject.toml", "/audio/..%2F..%2F..%2Fpyproject.toml",
                 "/audio/%2e%2e/%2e%2e/pyproject.toml", "/static/../app.py", "/static/..%2fapp.py",
                 "/static/%2e%2e/%2e%2e/%2e%2e/pyproject.toml", f"/audio/{'0' * 64}", f"/audio/{rejected}",
                 f"/song/{rejected}", "/audio/" + "..%2F" * 8 + "etc%2Fpasswd", "/song/%3Cscript%3E"):
        status, _, body = _get(url, path)
        assert status == 404, (path, status)
        assert secret not in body and b"def create_app" not in body and b"root:" not in body
    status, headers, _ = _get(url, f"/audio/{corpus.flagged}", {"Range": "bytes=0-15"})
    assert status == 206 and headers["content-length"] == "16"
    # Another site's page cannot use this server: not through another name (DNS rebinding), not by posting.
    assert _get(url, "/", {"Host": "evil.example"})[0] == 400
    decisions = corpus.out / "reviews" / "decisions"
    before = sorted(decisions.glob("part-*")) if decisions.exists() else []
    item = f'{{"item": "{corpus.flagged}:caption", "sha256": "0", "action": "drop"}}'.encode()
    status, _, _ = _get(url, "/api/decision", {"Content-Type": "application/json"}, "POST", item)
    assert status == 403 and (sorted(decisions.glob("part-*")) if decisions.exists() else []) == before


def test_beyond_loopback_the_token_is_needed(site, caplog):
    corpus, _ = site
    caplog.set_level("DEBUG")
    with review_server(corpus.out, "bob", host="0.0.0.0") as url:
        token = re.search(r"[?&]token=([^&]+)", url).group(1)
        local = f"http://127.0.0.1:{urlsplit(url).port}"
        assert _get(local, "/")[0] == 401
        assert _get(local, f"/?token=wrong{token}")[0] == 401
        assert _get(local, f"/audio/{corpus.flagged}")[0] == 401
        status, headers, _ = _get(local, f"/?token={token}&flag=any")
        assert status == 303 and headers["location"] == "/?flag=any"  # the token leaves the address bar
        cookie = headers["set-cookie"].split(";", 1)[0]
        assert "httponly" in headers["set-cookie"].lower()
        status, _, body = _get(local, "/?flag=any", {"Cookie": cookie})
        assert status == 200 and corpus.flagged.encode() in body
        assert _get(local, "/", {"Authorization": f"Bearer {token}"})[0] == 200
    assert token not in caplog.text  # never logged (uvicorn's access log is off)

