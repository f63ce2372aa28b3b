"""The web UI in a real headless Chromium, against the services running natively.

Run by scripts/test/suites/browser/webui-browser.sh, which starts Redis, rng, hasher, webui
and two workers and passes their whereabouts in the environment:
WEBUI_URL, EDITED_URL (a webui serving webui:v0.2's page from scripts/variants.sh
--assets: `sed -i s/15px/50px/ webui.css` and the chart in green), REDIS_PORT, REDIS_DIR, WORKERS (names, comma-separated),
RNG_INSTANCE, HASHER_INSTANCE, SCREENSHOT_DIR, CHROMIUM, CHROMEDRIVER, PROXY_URL and
PROXY_PREFIX (scripts/test/fixtures/prefix_proxy.py: the web UI under kubectl proxy's path).

Checks what a person sees: the speed climbs above 0 within 20 s, both
workers and the rng instance are listed, the chart is drawn, nothing is
logged to the console as an error, nothing shifts while the figures update,
there is no horizontal scrolling at 390 px; with Redis stopped a banner says
so, and it goes away by itself when Redis is back. Through a proxy that serves
it under /api/v1/namespaces/default/services/webui/proxy/ and rewrites nothing
(as `kubectl proxy` with the page's relative URLs), the page opens, every file
it names loads, the event stream delivers events and the speed shows. Saves a desktop and a
phone screenshot, measures the time from opening the page to a drawn chart
and the bytes the page loads. With DOCS_SCREENSHOT set, also writes the
picture of the live page for the docs there (1280 x 800, once the page has run
DOCS_SCREENSHOT_AFTER seconds). Ends with `N passed, M failed`.
"""

import base64
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib"))
import checks  # the shared check helpers (scripts/test/lib/checks.py)

ENV = os.environ
WEBUI_URL = ENV["WEBUI_URL"].rstrip("/")
EDITED_URL = ENV["EDITED_URL"].rstrip("/")
REDIS_PORT = ENV["REDIS_PORT"]
REDIS_DIR = ENV["REDIS_DIR"]
WORKERS = ENV["WORKERS"].split(",")
RNG_INSTANCE = ENV["RNG_INSTANCE"]
HASHER_INSTANCE = ENV["HASHER_INSTANCE"]
SCREENSHOT_DIR = ENV["SCREENSHOT_DIR"]
SPEED_DEADLINE = float(ENV.get("SPEED_DEADLINE", "20"))
# Two workers do about 2 x 3.3 hashes/s (the workshop's figure).
SPEED_MIN = float(ENV.get("SPEED_MIN", "5.0"))
SPEED_MAX = float(ENV.get("SPEED_MAX", "8.5"))
DOCS_SCREENSHOT = ENV.get("DOCS_SCREENSHOT", "")
DOCS_SCREENSHOT_AFTER = float(ENV.get("DOCS_SCREENSHOT_AFTER", "60"))
DOCS_SCREENSHOT_MAX_KB = float(ENV.get("DOCS_SCREENSHOT_MAX_KB", "200"))
PROXY_URL = ENV["PROXY_URL"].rstrip("/")
PROXY_PREFIX = ENV["PROXY_PREFIX"]

figures = {}


def check(what, ok, detail=""):
    """A check that shows its detail when it passes too."""
    return checks.check(ok, what, detail, detail_when_ok=True)


def wait_until(seconds, probe, interval=0.2):
    """Calls probe() until it returns something true; returns it, or None."""
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = ENV.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1920,1080", "--hide-scrollbars", "--no-first-run",
                "--disable-extensions", "--disable-background-networking"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=ENV.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=options, service=service)


def viewport(driver, width, height, scale, mobile):
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile})


def screenshot(driver, name):
    """The whole page, beyond the viewport, as a PNG; returns its path."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    path = os.path.join(SCREENSHOT_DIR, name)
    with open(path, "wb") as file:
        file.write(base64.b64decode(shot["data"]))
    return path


def docs_screenshot(driver, opened):
    """The live page at 1280 x 800 for the docs, once the chart has
    DOCS_SCREENSHOT_AFTER seconds of data; the viewport is set back after."""
    time.sleep(max(0.0, DOCS_SCREENSHOT_AFTER - (time.monotonic() - opened)))
    viewport(driver, 1280, 800, 1, False)
    updates = driver.execute_script("return window.dockercoins.updates")
    wait_until(5, lambda: driver.execute_script("return window.dockercoins.updates") >= updates + 2)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    data = base64.b64decode(shot["data"])
    with open(DOCS_SCREENSHOT, "wb") as file:
        file.write(data)
    value = speed(driver)
    check(f"the docs' screenshot shows the live page and is under {DOCS_SCREENSHOT_MAX_KB:.0f} kB",
          (value or 0) > 0 and len(data) <= DOCS_SCREENSHOT_MAX_KB * 1024,
          f"{DOCS_SCREENSHOT}: {len(data) / 1024:.0f} kB, {value} hashes/s shown")
    viewport(driver, 1920, 1080, 1, False)
    return DOCS_SCREENSHOT


def speed(driver):
    text = driver.execute_script("return document.getElementById('speed').textContent")
    match = re.fullmatch(r"~(\d+(?:\.\d+)?) hashes/second", text or "")
    return float(match.group(1)) if match else None


def listed(driver, list_id):
    return driver.execute_script(
        "return [...document.querySelectorAll('#' + arguments[0] + ' li[data-name]')]"
        ".map(li => li.dataset.name)", list_id)


# Counts the stroke's pixels on the chart's canvas.
CHART_PIXELS = """
const canvas = document.querySelector('#graph canvas');
if (!canvas) return 0;
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let count = 0;
for (let i = 0; i < data.length; i += 4) {
  if (Math.abs(data[i] - 23) < 30 && Math.abs(data[i + 1] - 70) < 30 && Math.abs(data[i + 2] - 194) < 30) count++;
}
return count;
"""

# Starts adding up layout shifts (Cumulative Layout Shift), buffered from load.
WATCH_SHIFTS = """
window.__shift = 0;
window.__shifted = [];
const describe = node => !node ? '?' : node.id ? '#' + node.id
  : (node.nodeName + (node.className && node.className.baseVal === undefined ? '.' + node.className : ''));
new PerformanceObserver(list => {
  for (const entry of list.getEntries()) {
    if (entry.hadRecentInput) continue;
    window.__shift += entry.value;
    window.__shifted.push(`${Math.round(entry.startTime)} ms ${entry.value.toFixed(4)}: ` +
      entry.sources.map(s => describe(s.node)).join(' '));
  }
}).observe({type: 'layout-shift', buffered: true});
"""

# The bytes the page loaded: the document and every resource it fetched.
# The event stream (/events) never ends, so it is left out.
LOADED_BYTES = """
const entries = [performance.getEntriesByType('navigation')[0], ...performance.getEntriesByType('resource')]
  .filter(e => e && !e.name.endsWith('/events'));
return entries.map(e => [e.name, e.transferSize, e.encodedBodySize, e.decodedBodySize]);
"""


def console_errors(driver):
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def redis_cli(*args):
    return subprocess.run(["redis-cli", "-p", REDIS_PORT, *args],
                          check=False, capture_output=True, text=True, timeout=10)


def start_redis():
    subprocess.run(["redis-server", "--port", REDIS_PORT, "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "yes", "--dir", REDIS_DIR,
                    "--daemonize", "yes", "--pidfile", os.path.join(REDIS_DIR, "redis.pid"),
                    "--logfile", os.path.join(REDIS_DIR, "redis.log")], check=True, timeout=10)


def main():
    os.makedirs(SCREENSHOT_DIR, exist_ok=True)
    try:
        driver = browser()
        try:
            run(driver)
        finally:
            driver.quit()
    except Exception as err:  # noqa: BLE001  a crash is one more failure, and the summary still prints
        check("the browser test ran to its end", False, repr(err))
    for name, value in figures.items():
        print(f"figure: {name} = {value}")
    return checks.summary()


def run(driver):
    # --- Desktop, a projector's 1920 x 1080 ---------------------------------
    viewport(driver, 1920, 1080, 1, False)
    opened = time.monotonic()
    driver.get(WEBUI_URL + "/")
    driver.execute_script(WATCH_SHIFTS)
    check("the page opens at /index.html", driver.current_url.endswith("/index.html"), driver.current_url)

    first = wait_until(SPEED_DEADLINE, lambda: (speed(driver) or 0) > 0)
    waited = time.monotonic() - opened
    check(f"#speed shows more than 0 hashes/second within {SPEED_DEADLINE:.0f} s",
          first, f"after {waited:.1f} s: {driver.find_element('id', 'speed').text!r}")

    workers = wait_until(10, lambda: set(WORKERS) <= set(listed(driver, "workers")) and listed(driver, "workers"))
    check("both workers are listed by name", workers, f"{workers}")
    rng = wait_until(10, lambda: RNG_INSTANCE in listed(driver, "rng") and listed(driver, "rng"))
    check("the rng instance is listed", rng, f"{rng}")
    hasher = wait_until(10, lambda: HASHER_INSTANCE in listed(driver, "hasher") and listed(driver, "hasher"))
    check("the hasher instance is listed", hasher, f"{hasher}")
    share = driver.execute_script(
        "return document.querySelector('#rng li[data-name] .figure').textContent")
    check("one rng instance answers 100% of the requests", share.startswith("100%"), share)

    # Let the speed window (10 s) fill with the two workers' work.
    time.sleep(max(0.0, 14 - (time.monotonic() - opened)))
    value = speed(driver)
    check(f"the speed of two workers is between {SPEED_MIN} and {SPEED_MAX} hashes/s",
          value is not None and SPEED_MIN <= value <= SPEED_MAX, f"{value}")
    figures["speed shown with 2 workers (hashes/s)"] = value
    worker_rates = driver.execute_script(
        "return [...document.querySelectorAll('#workers li[data-name] .figure')].map(e => e.textContent)")
    check("each worker shows its rate", all(r.endswith("hashes/s") for r in worker_rates), f"{worker_rates}")
    hashes = driver.find_element("id", "hashes").text
    check("the total of hashes is shown", re.fullmatch(r"[\d,]+", hashes) and hashes != "0", hashes)
    coins = driver.find_element("id", "coins").text
    check("the coins in the wallet are shown", re.fullmatch(r"[\d,]+", coins), coins)
    last_hash = driver.find_element("id", "last-hash").text
    check("the time since the last hash is shown", re.fullmatch(r"\d+(\.\d)? s ago", last_hash), last_hash)

    pixels = driver.execute_script(CHART_PIXELS)
    points = driver.execute_script("return window.dockercoins.chart.data[0].length")
    check("the chart is drawn (uPlot canvas, the speed's line)", pixels > 200 and points >= 10,
          f"{pixels} line pixels, {points} points")
    shift = driver.execute_script("return window.__shift")
    shifted = driver.execute_script("return window.__shifted")
    check("nothing shifts while the figures update (layout shift < 0.01)", shift < 0.01,
          f"{shift:.4f} {shifted[:4]}")
    figures["layout shift over the first 14 s"] = round(shift, 4)
    overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    check("no horizontal scrolling at 1920 px", overflow <= 0, f"{overflow} px too wide")
    desktop = screenshot(driver, "webui-desktop-1920.png")
    docs = docs_screenshot(driver, opened) if DOCS_SCREENSHOT else None

    # A fresh page with five minutes of history on the server, and an empty
    # cache: the time to a drawn chart, and the bytes loaded.
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    driver.get(WEBUI_URL + "/index.html")
    drawn = wait_until(5, lambda: driver.execute_script("return window.dockercoins.chartDrawnAt"))
    check("a freshly opened page draws the chart with history at once (< 1000 ms)",
          drawn is not None and drawn < 1000, f"{drawn} ms after navigation started")
    figures["load to drawn chart (ms)"] = None if drawn is None else round(drawn)
    loaded = driver.execute_script(LOADED_BYTES)
    encoded = sum(entry[2] for entry in loaded)
    decoded = sum(entry[3] for entry in loaded)
    figures["assets loaded (bytes on the wire / decoded)"] = ", ".join(
        f"{name.rsplit('/', 1)[-1] or '/'} {wire}/{size}" for name, _, wire, size in loaded)
    figures["assets size (bytes on the wire / decoded)"] = f"{encoded} / {decoded}"
    check("the page and its files were all loaded", len(loaded) >= 5 and decoded > 50_000,
          f"{len(loaded)} files, {decoded} bytes")
    driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": False})
    check("the page loads nothing from outside", all(n.startswith(WEBUI_URL) for n, *_ in loaded),
          f"{[n for n, *_ in loaded if not n.startswith(WEBUI_URL)]}")

    # --- Phone, 390 px wide -------------------------------------------------
    viewport(driver, 390, 844, 2, True)
    driver.get(WEBUI_URL + "/index.html")
    driver.execute_script(WATCH_SHIFTS)
    wait_until(5, lambda: driver.execute_script("return window.dockercoins.updates >= 3"))
    width = driver.execute_script("return window.innerWidth")
    overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    check("no horizontal scrolling at 390 px", width == 390 and overflow <= 0,
          f"viewport {width} px, {overflow} px too wide")
    too_wide = driver.execute_script(
        "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > "
        "window.innerWidth + 0.5 && getComputedStyle(e).position !== 'fixed').map(e => e.tagName + '.' + e.className)")
    check("no element sticks out at 390 px", not too_wide, f"{too_wide[:5]}")
    pixels = driver.execute_script(CHART_PIXELS)
    check("the chart is drawn at 390 px", pixels > 100, f"{pixels} line pixels")
    shift = driver.execute_script("return window.__shift")
    shifted = driver.execute_script("return window.__shifted")
    check("nothing shifts at 390 px while the figures update", shift < 0.01, f"{shift:.4f} {shifted[:4]}")
    phone = screenshot(driver, "webui-phone-390.png")

    # --- Redis down, then back ------------------------------------------------
    viewport(driver, 1920, 1080, 1, False)
    banner_hidden = "return document.getElementById('banner').hidden"
    check("no banner while Redis answers", driver.execute_script(banner_hidden))
    redis_cli("shutdown", "nosave")
    stopped = time.monotonic()
    shown = wait_until(10, lambda: not driver.execute_script(banner_hidden))
    text = driver.find_element("id", "banner").text
    check("with Redis stopped, a banner says it is unreachable", shown and "Redis" in text,
          f"after {time.monotonic() - stopped:.1f} s: {text!r}")
    redis_down = screenshot(driver, "webui-redis-down-1920.png")
    start_redis()
    restarted = time.monotonic()
    cleared = wait_until(20, lambda: driver.execute_script(banner_hidden))
    check("the banner goes away by itself when Redis is back", cleared,
          f"after {time.monotonic() - restarted:.1f} s")
    again = wait_until(20, lambda: (speed(driver) or 0) > 0)
    check("the speed comes back after Redis", again, driver.find_element("id", "speed").text)

    through_prefix_proxy(driver)

    # --- webui:v0.2 (scripts/variants.sh): the update lesson's sed -i s/15px/50px/
    # webui.css, and the chart in green as in the classic's v0.2 -----------------
    sizes = "return [axisFontSize(), getComputedStyle(document.querySelector('.u-legend')).fontSize, " \
            "chart.axes[0]._size, chart.series[1]._stroke, chart.series[1]._fill]"
    before = driver.execute_script(sizes)
    driver.get(EDITED_URL + "/index.html")
    wait_until(5, lambda: driver.execute_script("return window.dockercoins.updates >= 1"))
    after = driver.execute_script(sizes)
    check("webui:v0.2: the update lesson's sed (15px to 50px) makes the axis labels and legend bigger",
          before[:2] == [15, "15px"] and after[:2] == [50, "50px"] and after[2] > before[2],
          f"font, legend, x axis height: {before[:3]} then {after[:3]}")
    check("webui:v0.2: the chart is green where v0.1's is blue",
          before[3:] == ["#1746c2", "rgba(23, 70, 194, 0.15)"]
          and after[3:] == ["#2ca02c", "rgba(44, 160, 44, 0.15)"],
          f"line and fill: {before[3:]} then {after[3:]}")
    lesson = screenshot(driver, "webui-v0.2-1920.png")

    errors = console_errors(driver)
    check("no errors in the browser console", not errors, f"{errors[:3]}")

    print(f"screenshot: desktop {desktop}")
    print(f"screenshot: phone {phone}")
    print(f"screenshot: redis down {redis_down}")
    print(f"screenshot: webui:v0.2 (the update lesson) {lesson}")
    if docs:
        print(f"screenshot: for the docs {docs}")


def fetch(url, timeout=5):
    """(status, final URL, body) of a GET, redirects followed."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.geturl(), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, url, ""
    except OSError as err:
        return None, url, repr(err)


def first_event(url, seconds=5):
    """The name of the first server-sent event read from url, or an error."""
    try:
        with urllib.request.urlopen(url, timeout=seconds) as response:
            kind = response.headers.get("Content-Type", "")
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                line = response.readline().decode("utf-8", "replace").strip()
                if line.startswith("event:"):
                    return kind, line.split(":", 1)[1].strip()
            return kind, None
    except OSError as err:
        return None, repr(err)


def through_prefix_proxy(driver):
    """The accessinternal lesson: `kubectl proxy`, then
    /api/v1/namespaces/default/services/webui/proxy/, here through a proxy that
    strips that path and rewrites nothing."""
    base = PROXY_URL + PROXY_PREFIX
    started = time.monotonic()
    status, _, _ = fetch(PROXY_URL + "/index.html")
    check("the prefix proxy answers 404 outside its path (an absolute URL would fail)", status == 404, f"{status}")
    status, final, page = fetch(base + "/")
    check("through the prefix, / leads to the page under the prefix",
          status == 200 and final == base + "/index.html" and 'id="speed"' in page, f"{status} {final}")
    names = re.findall(r'(?:href|src)="([^"]+)"', page)
    answers = {name: fetch(f"{base}/{name}")[0] for name in names}
    check("every file the page names loads through the prefix",
          len(names) >= 5 and all(code == 200 for code in answers.values()), f"{answers}")
    kind, event = first_event(base + "/events")
    check("the event stream delivers an event through the prefix",
          (kind or "").startswith("text/event-stream") and event == "history", f"{kind}: first event {event!r}")
    opened = time.monotonic()
    driver.get(base + "/")
    check("in the browser, the page opens under the prefix",
          driver.current_url == base + "/index.html", driver.current_url)
    shown = wait_until(10, lambda: (speed(driver) or 0) > 0)
    check("through the prefix, the page shows a mining speed within 10 s", shown,
          f"after {time.monotonic() - opened:.1f} s: {driver.find_element('id', 'speed').text!r}")
    loaded = [name for name, *_ in driver.execute_script(LOADED_BYTES)]
    check("the page loaded everything from under the prefix",
          len(loaded) >= 5 and all(name.startswith(base + "/") for name in loaded),
          f"{[n for n in loaded if not n.startswith(base + '/')] or len(loaded)}")
    figures["the prefix proxy's checks (s)"] = round(time.monotonic() - started, 1)


if __name__ == "__main__":
    sys.exit(main())
