"The docs site as a reader meets it: rendered by a real Quarto (`nbdev-docs`), served on loopback, opened headless."
import functools, http.server, json, os, re, shutil, subprocess, sys, threading, time
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT/"_docs"
SHOTS = ROOT/"runs"/"site"
# CI installs Quarto and Chromium and sets this, so a missing piece fails there instead of skipping
REQUIRED = os.environ.get("WAKEA_REQUIRE_SITE") == "1"
NOTEBOOKS = sorted((ROOT/"nbs").glob("[0-9]*.ipynb")) + [ROOT/"nbs"/"index.ipynb"] + sorted((ROOT/"nbs"/"graders").glob("ch*.ipynb"))


def page_of(nb: Path) -> str:
    "The site path nbdev gives notebook `nb`: its name without the number prefix, under its folder."
    rel = nb.relative_to(ROOT/"nbs")
    return str(rel.parent/(re.sub(r"^\d+_", "", rel.stem) + ".html")).removeprefix("./")


def public_names(nb: Path) -> list[str]:
    "The functions and classes the notebook exports (the API docs the page must show)."
    cells = json.loads(nb.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code" and "".join(c["source"]).startswith("#| export"))
    return re.findall(r"^(?:def|class) ([A-Za-z]\w*)", code, flags=re.M)


def stored_figures(nb: Path) -> int:
    "How many image outputs the notebook stores."
    cells = json.loads(nb.read_text())["cells"]
    return sum("image/png" in o.get("data", {}) or "image/svg+xml" in o.get("data", {}) for c in cells for o in c.get("outputs", []))


def offline_artefact(message: str, page: str) -> bool:
    "Whether a console error only says a CDN was out of reach (this machine is offline; the published site is not)."
    if re.match(r"https?://(?!127\.0\.0\.1)\S+ - Failed to load", message): return True   # web font, MathJax
    # Quarto loads require.js from a CDN for pages with HTML outputs; without it, its one-line jQuery shim fails
    return "define is not defined" in message and "cdnjs.cloudflare.com/ajax/libs/require.js" in page


def missing() -> str | None:
    "Why the site cannot be rendered and opened here, or None."
    if not shutil.which("quarto"): return "quarto is not on PATH (a Quarto install, or `bash ../shared/tools/quarto/install.sh PREFIX`)"
    if not (shutil.which("chromium") and shutil.which("chromedriver")): return "no chromium and chromedriver (Debian: apt install chromium chromium-driver)"
    try: import selenium  # noqa: F401
    except ImportError: return "selenium is not installed (it is in the dev extra)"
    return None


@pytest.fixture(scope="module")
def site():
    "Render the site, serve `_docs/` on a loopback port; the base URL."
    if why := missing():
        if REQUIRED: pytest.fail(why)
        pytest.skip(why)
    start = time.monotonic()
    done = subprocess.run([str(Path(sys.executable).parent/"nbdev-docs")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(f"site rendered in {time.monotonic() - start:.0f} s")
    handler = functools.partial(type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}),
                                directory=str(DOCS))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture(scope="module")
def browser(site):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900", "--disable-gpu"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def visit(browser, url: str):
    "Open `url`, wait until the page and its images have loaded; the console messages it produced."
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(url)
    for _ in range(100):
        if browser.execute_script("return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"): break
        time.sleep(0.1)
    return browser.get_log("browser")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_page_renders_with_its_figures_and_api_docs(site, browser, nb):
    logs = visit(browser, site + page_of(nb))
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS/(page_of(nb).replace("/", "_") + ".png")))
    assert browser.find_element("css selector", "h1").text.strip(), "no title"
    broken = browser.execute_script("return Array.from(document.images).filter(i => !i.naturalWidth).map(i => i.src)")
    assert not broken, f"images that did not load: {broken}"
    if stored_figures(nb):   # the figures the notebook stores are on the page
        assert browser.execute_script("return document.querySelectorAll('img').length") >= 1, "the notebook's figures are missing"
    headings = set(browser.execute_script("return Array.from(document.querySelectorAll('h3, h4')).map(h => h.textContent.trim())"))
    undocumented = [name for name in public_names(nb) if name not in headings]
    assert not undocumented, f"exported but without API docs on the page: {undocumented}"
    errors = [e["message"] for e in logs if e["level"] == "SEVERE" and not offline_artefact(e["message"], browser.page_source)]
    assert not errors, f"console errors: {errors}"


def test_search_finds_a_chapter_by_a_word_of_its_body(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait
    visit(browser, site + "index.html")
    WebDriverWait(browser, 20).until(seen.element_to_be_clickable((By.CSS_SELECTOR, "#quarto-search .aa-DetachedSearchButton, #quarto-search button"))).click()
    box = WebDriverWait(browser, 20).until(seen.visibility_of_element_located((By.CSS_SELECTOR, "input.aa-Input")))
    box.send_keys("rotary")
    WebDriverWait(browser, 20).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".aa-Item a, a.search-result-link, .aa-Item"))
    hrefs = browser.execute_script("return Array.from(document.querySelectorAll('.aa-Panel a, .aa-Item a')).map(a => a.href)")
    assert any("rope.html" in h for h in hrefs), hrefs


def test_navigation_reaches_every_chapter_and_no_internal_link_is_broken(site, browser):
    visit(browser, site + "index.html")
    nav = set(browser.execute_script(
        "return Array.from(document.querySelectorAll('#quarto-sidebar a, nav.navbar a')).map(a => a.getAttribute('href'))"))
    nav = {urlparse(urljoin(site, h)).path.lstrip("/") for h in nav if h}
    chapters = {page_of(nb) for nb in NOTEBOOKS if nb.stem != "index"}
    assert chapters <= nav, f"not in the navigation: {sorted(chapters - nav)}"
    broken = []
    for page in sorted(DOCS.rglob("*.html")):
        if "site_libs" in page.parts: continue
        url = site + str(page.relative_to(DOCS))
        for href in re.findall(r'href="([^"#][^"]*)"', page.read_text(errors="replace")):
            target = urlparse(urljoin(url, href))
            if target.netloc != urlparse(site).netloc or target.scheme not in ("http", "https"): continue
            path = DOCS/target.path.lstrip("/")
            if not (path.is_file() or (path/"index.html").is_file()): broken.append(f"{page.relative_to(DOCS)} -> {href}")
    assert not broken, broken[:20]


def test_rendered_text_has_no_memory_addresses(site):
    found = [f"{p.relative_to(DOCS)}: {m}" for p in sorted(DOCS.rglob("*.html")) if "site_libs" not in p.parts
             for m in re.findall(r"at 0x[0-9a-fA-F]{6,}", p.read_text(errors="replace"))]
    assert not found, found[:10]
