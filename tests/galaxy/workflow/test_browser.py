"""Browser test: a user runs the published workflow through the Galaxy web UI.

Headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by Selenium, against the
Galaxy given by the environment (``browser_test.sh`` sets it: the ``make serve`` instance):

    IFU_GALAXY_URL, IFU_GALAXY_ADMIN_KEY   the server and its bootstrap admin key
    IFU_WORKFLOW_GA                        the .ga to import
    IFU_BROWSER_CUBE, IFU_BROWSER_CATALOGUE  files to upload
    IFU_BROWSER_SHOTS                      folder of the screenshots (test artefacts)
    IFU_BROWSER_TIMEOUT                    seconds to wait for the run (default 900)

The steps, each ending with a screenshot NN-<step>.png: log in; upload the cube and the
catalogue with the Upload dialog; import the workflow file from the Workflows page; run it with
3 chunks from the run form; wait for the history to turn green; open the HTML report; open one
spectrum plot of the report.  The API (with the same user's key) is only used to wait and to
find ids, never to act in the user's place.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("selenium", reason="the browser test runs in its own venv: browser_test.sh")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

URL = os.environ.get("IFU_GALAXY_URL", "").rstrip("/")
ADMIN_KEY = os.environ.get("IFU_GALAXY_ADMIN_KEY", "")
SHOTS = Path(os.environ.get("IFU_BROWSER_SHOTS", "browser-shots"))
TIMEOUT = float(os.environ.get("IFU_BROWSER_TIMEOUT", "900"))
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000", "--hide-scrollbars",
                  "--force-device-scale-factor=1")

pytestmark = pytest.mark.skipif(not URL or not ADMIN_KEY, reason="IFU_GALAXY_URL/IFU_GALAXY_ADMIN_KEY not set")


def api(method: str, path: str, key: str, payload: dict | None = None):
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(URL + path, data=data, method=method,
                                 headers={"x-api-key": key, "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)


@pytest.fixture(autouse=True)
def shot_on_failure(request):
    """A screenshot of the page a failing step left behind (NN-failed-<test>.png)."""
    yield
    s = request.getfixturevalue("session") if "session" in request.fixturenames else None
    rep = getattr(request.node, "rep_call", None)
    if s is not None and rep is not None and rep.failed:
        s.shot(f"failed-{request.node.name}")


class Session:
    """One browser, one user; ``shot`` numbers the screenshots in order."""

    def __init__(self, driver: webdriver.Chrome, email: str, password: str, key: str):
        self.d, self.email, self.password, self.key = driver, email, password, key
        self.n = 0

    def shot(self, name: str) -> Path:
        self.n += 1
        path = SHOTS / f"{self.n:02d}-{name}.png"
        self.d.save_screenshot(str(path))
        return path

    def wait(self, timeout: float = 60) -> WebDriverWait:
        return WebDriverWait(self.d, timeout, poll_frequency=0.5,
                             ignored_exceptions=(WebDriverException,))

    def click(self, css: str, timeout: float = 60):
        el = self.wait(timeout).until(EC.element_to_be_clickable((By.CSS_SELECTOR, css)))
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'});", el)
        el.click()
        return el

    def visible(self, css: str, timeout: float = 60):
        return self.wait(timeout).until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)))

    def text_on_page(self, text: str, timeout: float = 60) -> None:
        self.wait(timeout).until(EC.text_to_be_present_in_element((By.TAG_NAME, "body"), text))

    def select(self, css: str, value: str) -> None:
        """Choose the option VALUE (exact text) in a Galaxy (vue-multiselect) select box."""
        box = self.visible(css)
        box.find_element(By.CSS_SELECTOR, ".multiselect__select").click()
        field = box.find_element(By.CSS_SELECTOR, "input.multiselect__input")
        field.send_keys(value)
        time.sleep(0.7)
        options = [o for o in box.find_elements(By.CSS_SELECTOR, ".multiselect__option")
                   if o.text.strip() == value]
        assert options, f"no option {value!r} in {css}"
        options[0].click()
        time.sleep(0.3)
        shown = box.find_element(By.CSS_SELECTOR, ".multiselect__single").text.strip()
        assert shown == value, f"{css} shows {shown!r}, not {value!r}"

    def history(self) -> dict:
        return api("GET", "/api/histories/most_recently_used", self.key)


@pytest.fixture(scope="module")
def session():
    SHOTS.mkdir(parents=True, exist_ok=True)
    email = f"browser-{secrets.token_hex(4)}@example.org"
    password = secrets.token_hex(12)
    user = api("POST", "/api/users", ADMIN_KEY, {"email": email, "username": email.split("@")[0],
                                                 "password": password})
    key = api("POST", f"/api/users/{user['id']}/api_key", ADMIN_KEY)
    opts = Options()
    opts.binary_location = os.environ.get("IFU_CHROMIUM", "/usr/bin/chromium")
    profile = SHOTS / ".profile"
    for arg in CHROMIUM_FLAGS + (f"--user-data-dir={profile.resolve()}",):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(os.environ.get("IFU_CHROMEDRIVER", "/usr/bin/chromedriver")),
                              options=opts)
    driver.set_page_load_timeout(120)
    try:
        yield Session(driver, email, password, key)
    finally:
        driver.quit()


def test_01_login(session):
    s = session
    s.d.get(URL + "/login/start")
    s.visible("#login-form-name").send_keys(s.email)
    s.visible("#login-form-password").send_keys(s.password)
    s.click("button[name='login']")
    s.visible("#activity-upload", timeout=120)
    s.shot("logged-in")


def test_02_upload(session):
    s = session
    files = [(os.environ["IFU_BROWSER_CUBE"], "fits"), (os.environ["IFU_BROWSER_CATALOGUE"], "txt")]
    s.click("#activity-upload")
    s.click("div#regular button#btn-local")
    chooser = s.d.find_element(By.CSS_SELECTOR, 'div#regular input[type="file"]')
    chooser.send_keys("\n".join(str(Path(p).resolve()) for p, _ in files))
    for n, (path, ext) in enumerate(files):
        s.visible(f"#upload-row-{n}")
        s.select(f"#upload-row-{n} .upload-extension", ext)
    time.sleep(1)
    s.shot("upload-dialog")
    s.click("div#regular button#btn-start")
    s.click("div#regular button#btn-close")
    deadline = time.time() + 300
    h = {}
    while time.time() < deadline:
        h = s.history()
        states = h.get("state_details", {})
        if states.get("ok", 0) >= 2 or states.get("error", 0) or states.get("failed_metadata", 0):
            break
        time.sleep(2)
    if h.get("state_details", {}).get("ok", 0) != 2 or h.get("state_details", {}).get("error", 0):
        s.shot("upload-failed")
        pytest.fail(f"the uploads did not turn green: {h.get('state_details')}")
    s.text_on_page(Path(os.environ["IFU_BROWSER_CATALOGUE"]).name, timeout=60)
    s.shot("uploaded")


def test_03_import_workflow(session):
    s = session
    s.click("#activity-workflows")
    s.click("#workflow-import")
    s.click(".workflow-import-file-link")
    s.d.find_element(By.CSS_SELECTOR, 'input[type="file"]').send_keys(os.environ["IFU_WORKFLOW_GA"])
    time.sleep(1)
    s.shot("import-workflow")
    s.click(".go-next-btn.btn-primary:not([disabled])")
    s.visible(".workflow-card-list", timeout=120)
    s.text_on_page("IFU spectral extraction")
    s.shot("workflow-list")


def pick_dataset(s, label: str, name: str) -> None:
    """Choose history dataset NAME in the run form's data input LABEL (a vue-multiselect)."""
    box = s.wait().until(EC.element_to_be_clickable(
        (By.CSS_SELECTOR, f'[data-label="{label}"] .multiselect')))
    s.d.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
    box.click()
    option = s.wait().until(EC.element_to_be_clickable((By.XPATH, (
        f'//*[@data-label="{label}"]//li[contains(@class, "multiselect__element")]'
        f'//span[contains(normalize-space(.), "{name}")]'))))
    option.click()
    s.wait().until(lambda d: name in d.find_element(
        By.CSS_SELECTOR, f'[data-label="{label}"] .multiselect').text)
    time.sleep(0.5)


def test_04_run_workflow(session):
    s = session
    s.click('[id^="g-card-action-workflow-run-"]')
    s.visible("#run-workflow", timeout=120)
    for label, value in (("Number of parts", "3"), ("Continuum degree", "1")):
        field = s.wait().until(EC.visibility_of_element_located((By.XPATH, (
            f"//*[normalize-space(text())='{label}']/ancestor::div[.//input][1]//input"))))
        s.d.execute_script("arguments[0].scrollIntoView({block: 'center'});", field)
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(value)
        time.sleep(0.5)
    s.text_on_page("wf_cube.fits")
    # The catalogue is an optional input: the form leaves it empty until the user picks it.
    pick_dataset(s, "Catalogue", Path(os.environ["IFU_BROWSER_CATALOGUE"]).name)
    s.shot("run-form")
    s.click("#run-workflow:not(.g-disabled)")
    s.text_on_page("Invocation", timeout=120)
    s.shot("invoked")


def test_05_history_green(session):
    s = session
    deadline = time.time() + TIMEOUT
    h, invocations = {}, []
    while time.time() < deadline:
        h = s.history()
        details = h.get("state_details", {})
        if details.get("error", 0) or details.get("failed_metadata", 0):
            pytest.fail(f"a dataset of the run failed: {details}")
        invocations = api("GET", f"/api/invocations?history_id={h['id']}", s.key)
        scheduled = invocations and all(i["state"] in ("scheduled", "completed") for i in invocations)
        if any(i["state"] in ("failed", "cancelled") for i in invocations):
            pytest.fail(f"the invocation failed: {invocations}")
        # Every job of the invocation has ended green, and nothing of the history is still busy.
        jobs = api("GET", f"/api/jobs?invocation_id={invocations[0]['id']}", s.key) if invocations else []
        done = jobs and all(j["state"] == "ok" for j in jobs) and len(jobs) >= 10
        busy = sum(details.get(k, 0) for k in ("new", "queued", "running", "upload", "setting_metadata"))
        if scheduled and done and h.get("state") == "ok" and not busy:
            extract_jobs = [j for j in jobs if j["tool_id"] == "ifu_extract_extract"]
            assert len(extract_jobs) == 3, f"{len(extract_jobs)} extract jobs: the 3 chunks set in the form"
            break
        time.sleep(5)
    else:
        pytest.fail(f"the history did not turn green in {TIMEOUT} s: {h.get('state_details')}, {invocations}")
    s.d.get(URL + "/")
    s.text_on_page("QA report", timeout=120)
    # The panel shows no running or queued item any more.
    s.wait(120).until(lambda d: not d.find_elements(
        By.CSS_SELECTOR, "#current-history-panel [data-state='running'], #current-history-panel [data-state='queued'], "
                         "#current-history-panel [data-state='new']"))
    time.sleep(3)
    s.shot("history-green")


def report_dataset(s: Session) -> dict:
    contents = api("GET", f"/api/histories/{s.history()['id']}/contents?v=dev&q=extension-eq&qv=html"
                   "&keys=id,name,hid,state", s.key)
    reports = [c for c in contents if c.get("name", "").startswith("IFU extract: QA report")]
    assert reports, f"no QA report in the history: {[c.get('name') for c in contents]}"
    return max(reports, key=lambda c: c["hid"])


def test_06_report(session):
    s = session
    report = report_dataset(s)
    s.d.get(f"{URL}/datasets/{report['id']}/display/?preview=True")
    s.text_on_page("ifu-extract QA report", timeout=60)
    # The 8 objects of the catalogue and the one galaxy the detection adds to it.
    s.text_on_page("9 objects", timeout=30)
    objects = s.d.find_elements(By.CSS_SELECTOR, "table#objects tbody")
    assert len(objects) == 9, f"{len(objects)} objects in the report table, expected 8 catalogue objects + 1 detected"
    # Readable at 1400 x 1000 without scrolling sideways; thumbnails at least 240 px tall.
    width = s.d.execute_script("return document.documentElement.scrollWidth")
    assert width <= 1400, f"the report is {width} px wide in a 1400 px window"
    s.shot("report")


def test_06b_report_figures_load_from_every_display_url(session):
    """Galaxy shows the report at .../display/?preview=True and .../display?preview=True: the
    figures' relative links must resolve from both."""
    s = session
    report = report_dataset(s)
    for path in ("display/?preview=True", "display?preview=True"):
        s.d.get(f"{URL}/datasets/{report['id']}/{path}")
        s.text_on_page("ifu-extract QA report", timeout=60)
        imgs = s.d.find_elements(By.CSS_SELECTOR, "tr.figs img")
        assert imgs, f"no figure in the report at {path}"
        heights = []
        for img in imgs[:4]:   # loaded lazily: brought into view one by one
            s.d.execute_script("arguments[0].scrollIntoView()", img)
            WebDriverWait(s.d, 60).until(lambda d, i=img: d.execute_script(
                "return arguments[0].complete && arguments[0].naturalHeight > 0", i))
            heights.append(s.d.execute_script("return arguments[0].getBoundingClientRect().height", img))
        assert min(heights) >= 240, f"figures {heights} px tall at {path}"


def test_07_spectrum_plot(session):
    s = session
    report = report_dataset(s)
    s.d.get(f"{URL}/datasets/{report['id']}/display/?preview=True")
    images = [img.get_attribute("src") for img in s.d.find_elements(By.CSS_SELECTOR, "img")]
    spectra = [src for src in images if src and "spec" in src.rsplit("/", 1)[-1].lower()]
    assert spectra, f"no spectrum figure in the report: {images[:5]}"
    s.d.get(spectra[0])
    img = s.visible("img", timeout=60)
    width = s.d.execute_script("return arguments[0].naturalWidth", img)
    assert width and width > 200, f"the spectrum plot did not load ({width} px wide)"
    s.shot("spectrum-plot")
