"""The real app in a real browser: `streamlit run` as a subprocess, headless Chromium via Playwright.

Uploads a shipped sample on the Diagnose page and waits for the predicted class and the Grad-CAM
image; then screenshots every page at 1366x768 (into $LEUKOSCOPE_SHOTS if set, else a temporary
folder). Needs Debian's /usr/bin/chromium (`apt-get install chromium`); skipped without it.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SAMPLE = ROOT / "samples" / "Original" / "Pro" / "WBC-Malignant-Pro-041.jpg"
VIEWPORT = {"width": 1366, "height": 768}
# Compare runs every model with weights here (a minute or two on this CPU): the tiny one is enough.
PAGES = [("home", ""), ("diagnose", "Diagnose"), ("segmentation", "Segmentation"),
         ("compare", "Compare_models?models=mobilenetv2-baseline"),
         ("benchmark", "Benchmark"), ("batch", "Batch"), ("case", "Case"), ("history", "History")]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(),
                                                  reason="/usr/bin/chromium is absent (apt-get install chromium)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    """One app server for this module's tests (starting one costs a TensorFlow import and a model load)."""
    tmp_path = tmp_path_factory.mktemp("server")
    port = _free_port()
    env = dict(os.environ, LEUKOSCOPE_WEIGHTS=str(tiny_run), KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3",
               LEUKOSCOPE_HISTORY=str(tmp_path / "history"))
    log = open(tmp_path / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group, started above
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def _script_done(page, timeout_ms: int = 120_000) -> None:
    """Wait until Streamlit has run the script (a page whose tables sit in collapsed expanders never
    draws them, so `_settle` would wait for ever)."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_ms)
    page.wait_for_timeout(1000 if os.environ.get("LEUKOSCOPE_SHOTS") else 200)


def _settle(page, timeout_ms: int = 120_000) -> None:
    """Wait until Streamlit has run the script and drawn what it sent (no skeletons, visible tables drawn)."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_ms)
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stSkeleton"]')
              && [...document.querySelectorAll('[data-testid="stDataFrame"]')]
                     .every(d => d.offsetParent === null || d.querySelector('canvas'))""", timeout=timeout_ms)
    # Plotly and images paint after the elements exist: worth waiting for only when the shots are kept.
    page.wait_for_timeout(1000 if os.environ.get("LEUKOSCOPE_SHOTS") else 200)


def _fill(page, values: dict, attempts: int = 3) -> None:
    """Type each value into its field and check that every field still holds it once the script is idle.

    Once in CI, on a loaded machine, a text area of the History page's addendum form was empty again
    a moment after it was typed into (a script run drawing the form anew; the cause was not pinned
    down; of 13 runs of this test alone here, one failed, its message not kept). The typing is then
    repeated, as a user would, up to `attempts` times; the script states seen are kept for the
    message. What the test checks after this, that the submitted words are saved and shown, no retry
    here can fake.
    """
    page.evaluate("""() => { const app = document.querySelector('[data-testid="stApp"]'); window.__leukoRuns = [];
        new MutationObserver(() => window.__leukoRuns.push(app.getAttribute('data-test-script-state')))
            .observe(app, {attributes: true, attributeFilter: ['data-test-script-state']}); }""")
    for _attempt in range(attempts):
        for field, value in values.items():
            field.fill(value)
        _script_done(page)
        held = [field.input_value() for field in values]
        if held == list(values.values()):
            return
    raise AssertionError(f"the fields held {held} after {attempts} attempts; "
                         f"script states seen: {page.evaluate('() => window.__leukoRuns')}")


def test_diagnose_in_a_browser(server, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("LEUKOSCOPE_SHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport=VIEWPORT)
            outside = []  # the app must not fetch anything from outside this machine
            page.on("request", lambda r: outside.append(r.url)
                    if r.url.split("/")[2:3] != [server.split("/")[2]] and r.url.startswith("http") else None)
            # The front door first, as a user would; its shot is taken again below.
            page.goto(server, wait_until="domcontentloaded")
            _settle(page)
            page.goto(f"{server}/Diagnose?model=mobilenetv2-baseline", wait_until="domcontentloaded")
            page.wait_for_selector('[data-testid="stFileUploaderDropzoneInput"]', state="attached", timeout=120_000)
            page.set_input_files('[data-testid="stFileUploaderDropzoneInput"]', str(SAMPLE))

            verdict = page.locator('[data-testid="stAlertContentSuccess"], [data-testid="stAlertContentWarning"]')
            verdict.first.wait_for(timeout=180_000)
            text = verdict.first.inner_text()
            assert any(n in text for n in ("Benign", "Early Pre-B", "Pre-B", "Pro-B")), text
            assert page.get_by_text("Page not found").count() == 0
            cam_caption = page.get_by_text("Grad-CAM: ", exact=False).first
            cam_caption.wait_for(timeout=180_000)
            _settle(page)
            cam_img = page.locator('[data-testid="stImage"]', has=page.get_by_text("Grad-CAM: ")).locator("img")
            assert cam_img.count() == 1
            page.screenshot(path=str(shots / "2_diagnose.png"))
            cam_img.first.scroll_into_view_if_needed()  # Streamlit images load lazily
            # decode() resolves once the PNG has arrived and decoded (rejects for a broken image).
            assert cam_img.first.evaluate("img => img.decode().then(() => img.naturalWidth)") > 0
            assert page.locator('[data-testid="stException"]').count() == 0
            assert "Traceback" not in page.content()
            page.screenshot(path=str(shots / "2b_diagnose_cam.png"))

            for i, (name, path) in enumerate(PAGES):
                if name == "diagnose":
                    continue
                page.goto(f"{server}/{path}", wait_until="domcontentloaded")
                _settle(page, timeout_ms=180_000)
                assert page.locator('[data-testid="stException"]').count() == 0, name
                page.screenshot(path=str(shots / f"{i + 1}_{name}.png"))
                if name == "benchmark":
                    page.get_by_role("tab", name="Confusion matrices").click()
                    _settle(page)
                    page.screenshot(path=str(shots / f"{i + 1}b_{name}_matrices.png"))
            assert outside == [], outside
        finally:
            browser.close()


def test_case_review_in_a_browser(server, tmp_path):
    """Create a case, upload three images, reclassify one with a reason, confirm the others, sign,
    download the PDF, switch to Bangla."""
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("LEUKOSCOPE_SHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    three = [str(ROOT / "samples" / "Original" / c / f) for c, f in (
        ("Pre", "WBC-Malignant-Pre-241.jpg"), ("Benign", "WBC-Benign-126.jpg"), ("Pro", "WBC-Malignant-Pro-613.jpg"))]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
            page.goto(f"{server}/Case?model=mobilenetv2-baseline", wait_until="domcontentloaded")
            _settle(page, timeout_ms=180_000)
            page.get_by_role("textbox").first.fill("BM-2026-007")
            page.get_by_role("button", name="Create the case").click()
            _settle(page)
            page.set_input_files('[data-testid="stFileUploaderDropzoneInput"]', three)
            page.get_by_text("Image 3").first.wait_for(timeout=240_000)
            _settle(page, timeout_ms=240_000)
            first = page.locator('[data-testid="stForm"]').nth(0)
            first.get_by_text("reclassified", exact=True).click()
            _fill(page, {first.get_by_role("textbox"): "nuclear chromatin and nucleoli fit another subtype"})
            first.get_by_role("button", name="Save decision").click()
            # Wait for each decision to show before the next click: a click during a rerun can be lost.
            page.get_by_text("reclassified →", exact=False).first.wait_for(timeout=60_000)
            _settle(page)
            for i in (1, 2):  # images 2 and 3: confirm the suggestion (the preselected decision)
                page.locator('[data-testid="stForm"]').nth(i).get_by_role("button", name="Save decision").click()
                page.get_by_text("confirmed →", exact=False).nth(i - 1).wait_for(timeout=60_000)
                _settle(page)
            page.screenshot(path=str(shots / "7_case_reviewed.png"), full_page=True)
            page.get_by_text("Case history on this computer").click()  # the sidebar's opt-in
            page.get_by_text("Save signed cases to a history file").click()
            page.get_by_text("Draft saved in the case history", exact=False).first.wait_for(timeout=120_000)
            _settle(page)  # the rerun that saved the draft has drawn the page
            sign_form = page.locator('[data-testid="stForm"]', has=page.get_by_role("button", name="Sign the case"))
            _fill(page, {sign_form.get_by_role("textbox"): "Dr. N. Rahman"})
            sign_form.get_by_role("button", name="Sign the case").click()
            page.get_by_text("Signed by Dr. N. Rahman", exact=False).first.wait_for(timeout=60_000)
            _settle(page)
            with page.expect_download(timeout=120_000) as download:
                page.get_by_role("button", name="Download the report (PDF)").click()
            assert Path(download.value.path()).read_bytes().startswith(b"%PDF")
            page.get_by_text("বাংলা", exact=True).click()
            page.get_by_role("heading", name="কেস পর্যালোচনা").wait_for(timeout=60_000)
            _settle(page)
            assert page.locator('[data-testid="stException"]').count() == 0
            page.screenshot(path=str(shots / "7b_case_signed_bn.png"))
            # Another browser session finds the signed case in the history and adds an addendum, in Bangla.
            history = browser.new_page(viewport=VIEWPORT)
            history.goto(f"{server}/History?lang=bn", wait_until="domcontentloaded")
            history.get_by_text("BM-2026-007", exact=False).first.wait_for(timeout=120_000)
            _script_done(history)
            addendum = history.locator('[data-testid="stForm"]')
            addendum.get_by_role("button", name="সংযোজনী যোগ করুন").wait_for(timeout=120_000)
            _script_done(history)
            text, name = addendum.get_by_role("textbox").first, addendum.get_by_role("textbox").nth(1)
            _fill(history, {text: "ফ্লো সাইটোমেট্রি: CD10+, CD19+", name: "Dr. N. Rahman"})
            # Streamlit's own hint under a field being edited is English; the app restates it (CSS).
            hint = history.evaluate("""() => [...document.querySelectorAll(
                '[data-testid="stForm"] [data-testid="stTextInput"] [data-testid="InputInstructions"] span')]
                .map(e => [getComputedStyle(e).fontSize, getComputedStyle(e, '::after').content])""")
            assert hint == [["0px", '"ফর্ম জমা দিতে Enter চাপুন"']], hint
            addendum.get_by_role("button", name="সংযোজনী যোগ করুন").click()
            try:
                history.get_by_text("ফ্লো সাইটোমেট্রি: CD10+, CD19+", exact=False).first.wait_for(timeout=120_000)
            except Exception as exc:  # say what the page showed instead
                raise AssertionError(history.locator("section.main, [data-testid='stMain']").first.inner_text()[-1500:]) \
                    from exc
            _script_done(history)
            assert history.locator('[data-testid="stException"]').count() == 0
            history.screenshot(path=str(shots / "8b_history_addendum_bn.png"), full_page=True)
            history.get_by_text("অডিট ট্রেইল", exact=False).first.click()  # the audit trail, in Bangla
            trail = history.locator('[data-testid="stExpander"]').last.locator('[data-testid="stDataFrame"]')
            trail.wait_for(timeout=60_000)
            trail.scroll_into_view_if_needed()
            history.wait_for_timeout(1000)
            history.screenshot(path=str(shots / "8c_history_audit_bn.png"))
            # Streamlit words its upload box in English; the app restates it (CSS) in Bangla.
            page.goto(f"{server}/Diagnose?lang=bn", wait_until="domcontentloaded")
            page.locator('[data-testid="stFileUploaderDropzone"]').first.wait_for(timeout=120_000)
            words = page.evaluate("""() => [
                '[data-testid="stFileUploaderDropzone"] [data-testid="stMarkdownContainer"] p',
                '[data-testid="stFileUploaderDropzoneInstructions"] span',
            ].map(s => getComputedStyle(document.querySelector(s), '::after').content)""")
            assert words[0] == '"আপলোড"' and "50 MB" in words[1] and "প্রতিটি ছবি" in words[1], words
        finally:
            browser.close()
