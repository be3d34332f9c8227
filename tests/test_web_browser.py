"""The control surface in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by
Selenium), on ``lofi-live run --web 0`` playing the shipped model over real JACK ports.

A player client plays into the engine's input and a listener hears its output, as a keyboard and a synth
would. The page is loaded with the printed URL; its knobs are turned with the keyboard and the mouse, and
``GET /api/status`` must follow; played notes must appear on the roll; the refusals (no token, a
re-pointed host name, a foreign page) must hold in a browser; Ctrl-C with the page open must end the run
cleanly with nothing sounding. Skipped, saying why, without Selenium, Chromium or chromedriver
(``./run.sh test`` installs them with apt-get where it can).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from jack_helpers import ROOT, Listener, Player, connect, engine_ports, still_sounding, unique, wait_for_ports

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run")
#: A host name re-pointed at this machine, as DNS rebinding would (Chromium's resolver rule, no DNS needed).
REBOUND = "rebind.test"
URL_LINE = re.compile(r"^lofi-live: control surface (http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]{43,}))$")

pytestmark = [pytest.mark.jack, pytest.mark.slow]


def _no_browser() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} not found (apt-get install {package}): the browser tests need Debian's Chromium"
    try:
        import starlette, uvicorn  # noqa: F401, E401
    except ImportError:
        return "the [web] extra is not installed (pip install -e '.[web]')"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    reason = _no_browser()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
                 f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_script_timeout(20)
    _viewport(driver, 1280, 800)
    yield driver
    driver.quit()


def _viewport(driver, width: int, height: int, mobile: bool = False) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
    driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": mobile})


class Run:
    """``lofi-live run --web 0`` on the shipped model and real JACK ports, with a player and a listener."""

    def __init__(self, backend: str, folder: Path, *extra: str) -> None:
        self.name = unique("LoFi Web")
        command = [sys.executable, "-m", "lofi_live.cli", "run",
                   "--backend", "jack", "--name", self.name, "--web", "0", "--record", str(folder / "jam.mid"),
                   "--bpm", "120", "--seed", "3", *extra]
        self.proc = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"))
        self.lines: list[str] = []
        threading.Thread(target=lambda: [self.lines.append(line.rstrip("\n")) for line in self.proc.stdout],
                         daemon=True).start()
        found = self.wait_line(URL_LINE)
        self.url, self.port, self.token = found.group(1), int(found.group(2)), found.group(3)
        self.base = f"http://127.0.0.1:{self.port}"
        engine_in, engine_out = engine_ports(self.name)
        wait_for_ports([engine_in, engine_out], proc=self.proc)
        self.player, self.listener = Player(backend), Listener(backend)
        connect(self.player.jack_name, engine_in)
        connect(engine_out, self.listener.jack_name)

    def wait_line(self, pattern: re.Pattern, timeout: float = 60.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = pattern.match(line)
                if found:
                    return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern.pattern!r} not printed:\n" + "\n".join(self.lines))

    def status(self) -> dict:
        request = urllib.request.Request(f"{self.base}/api/status", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.player.close()
        self.listener.close()


def _wait(condition, timeout: float = 10.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


@pytest.fixture(scope="module")
def run(browser, jack_server, tmp_path_factory):
    started = Run(jack_server, tmp_path_factory.mktemp("web-run"), "--mode", "continue", "--wait-beats", "1",
                  "--response-bars", "2")
    yield started
    started.close()


def _drawn(browser, part: str) -> list[int]:
    """The pitches of the roll's notes of ``part``, read in one go (the roll is redrawn 20 times a second)."""
    return browser.execute_script(
        "return Array.from(document.querySelectorAll(`rect[data-part='${arguments[0]}']`)).map(r => Number(r.dataset.pitch))",
        part)


def _open(browser, run) -> None:
    browser.get(run.url)
    assert _wait(lambda: browser.execute_script("return document.body.dataset.connected === 'yes'")), \
        "the page never received the engine's status"


def test_the_page_loads_with_the_token_and_shows_the_instrument(browser, run):
    from selenium.webdriver.common.by import By

    _open(browser, run)
    assert browser.title == "lofi-live"
    assert browser.find_element(By.CSS_SELECTOR, 'svg[data-view="roll"]').is_displayed()
    assert _wait(lambda: browser.find_element(By.CSS_SELECTOR, '[data-text="transport"]').text == "playing")
    for name in ("temperature", "variation", "swing", "tempo", "mode", "key_lock", "panic"):
        assert browser.find_element(By.CSS_SELECTOR, f'[data-control="{name}"]').is_displayed(), name
    assert 0.0 <= run.status()["variation"] <= 1.0
    assert _wait(lambda: "jam" in browser.find_element(By.CSS_SELECTOR, '[data-view="sessions"]').text)
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 1280
    for name in ("panic", "temperature", "variation"):  # the whole instrument fits in 1280x800
        box = browser.find_element(By.CSS_SELECTOR, f'[data-control="{name}"]').rect
        assert box["y"] + box["height"] <= 800, (name, box)
    logs = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not logs, logs


def test_moving_the_controls_changes_the_engine_status(browser, run):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _open(browser, run)
    knob = browser.find_element(By.CSS_SELECTOR, '[data-control="temperature"]')
    knob.send_keys(Keys.END)
    assert _wait(lambda: run.status()["temperature"] == pytest.approx(2.0)), run.status()["temperature"]
    knob.send_keys(Keys.HOME)
    assert _wait(lambda: run.status()["temperature"] == pytest.approx(0.1))
    ActionChains(browser).click_and_hold(knob).move_by_offset(0, -80).release().perform()  # dragged up
    assert _wait(lambda: run.status()["temperature"] > 0.5), run.status()["temperature"]
    browser.find_element(By.CSS_SELECTOR, '[data-control="swing"]').send_keys(Keys.END)
    assert _wait(lambda: run.status()["swing"] == pytest.approx(75))
    tempo = browser.find_element(By.CSS_SELECTOR, '[data-control="tempo"]')
    for _ in range(4):
        tempo.send_keys(Keys.ARROW_UP)
    assert _wait(lambda: run.status()["bpm"] > 120.5), run.status()["bpm"]
    browser.find_element(By.CSS_SELECTOR, '[data-control="mode"] input[value="accompany"] + span').click()
    assert _wait(lambda: run.status()["mode"] == "accompany")
    lock = browser.find_element(By.CSS_SELECTOR, '[data-control="key_lock"]')
    lock.click()
    assert _wait(lambda: run.status()["key_lock"] is True)
    assert lock.get_attribute("aria-pressed") == "true"
    def panic_heard() -> bool:
        pressed = time.perf_counter()
        browser.find_element(By.CSS_SELECTOR, '[data-control="panic"]').click()
        return _wait(lambda: any(t > pressed and m.type == "control_change" and m.control == 123
                                 for t, m in run.listener.snapshot()), 5)

    # the dummy JACK server drops an event now and then: one of two presses must be heard
    assert panic_heard() or panic_heard(), "panic sent no All Notes Off"
    # and the other way: a control from a script moves the page's knob
    request = urllib.request.Request(f"{run.base}/api/control", data=json.dumps({"name": "temperature", "value": 1.5}).encode(),
                                     headers={"Authorization": f"Bearer {run.token}"}, method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    assert _wait(lambda: knob.get_attribute("aria-valuenow") == "1.5"), knob.get_attribute("aria-valuenow")
    for name, value in (("mode", "continue"), ("key_lock", False), ("tempo", 120.0), ("swing", 50.0)):
        request = urllib.request.Request(f"{run.base}/api/control", data=json.dumps({"name": name, "value": value}).encode(),
                                         headers={"Authorization": f"Bearer {run.token}"}, method="POST")
        urllib.request.urlopen(request, timeout=10).close()


def test_played_notes_and_the_answer_appear_on_the_roll(browser, run):
    from selenium.webdriver.common.by import By

    _open(browser, run)
    assert _wait(lambda: run.status()["mode"] == "continue")
    pitches = [60, 64, 67, 72]
    for _ in range(3):  # played again if a loaded JACK server dropped a message
        run.player.play_phrase(pitches, interval=0.25, length=0.2)
        if _wait(lambda: set(_drawn(browser, "player")) >= set(pitches), timeout=3):
            break
    assert set(_drawn(browser, "player")) >= set(pitches), _drawn(browser, "player")
    assert _wait(lambda: _drawn(browser, "model"), timeout=15), "the model's answer never appeared on the roll"
    shown = set(_drawn(browser, "model"))
    # the roll shows what the port sent (a loaded dummy JACK server delivers late, and drops the odd message)
    heard = lambda: {m.note for _, m in run.listener.snapshot() if m.type in ("note_on", "note_off")}  # noqa: E731
    assert _wait(lambda: shown & heard(), timeout=5), (shown, heard())
    roll = browser.find_element(By.CSS_SELECTOR, '[data-view="roll"]')
    assert int(roll.get_attribute("data-player")) >= 4


def test_keyboard_and_screen_reader_reach_every_control(browser, run):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _open(browser, run)
    controls = [el for el in browser.find_elements(By.CSS_SELECTOR, "[data-control]") if el.is_displayed()]
    for element in controls:
        focusable = element.find_elements(By.CSS_SELECTOR, "input") or [element]
        for each in focusable:
            assert each.accessible_name.strip(), each.get_attribute("outerHTML")[:120]
    knob = browser.find_element(By.CSS_SELECTOR, '[data-control="temperature"]')
    assert knob.aria_role == "slider" and knob.get_attribute("aria-valuetext")
    wanted = ["temperature", "swing", "tempo", "response_bars", "mode", "key_lock", "loop", "mutate", "panic"]
    order: list[str] = []
    browser.find_element(By.TAG_NAME, "body").click()
    for _ in range(30):  # Tab walks the controls in reading order
        ActionChains(browser).send_keys(Keys.TAB).perform()
        active = browser.switch_to.active_element
        name = active.get_attribute("data-control") or active.get_attribute("name")
        if name in wanted and name not in order:
            order.append(name)
    assert order == wanted


def test_the_page_is_usable_on_a_tablet(browser, run):
    from selenium.webdriver.common.by import By

    try:
        _viewport(browser, 820, 1180, mobile=True)
        _open(browser, run)
        assert browser.execute_script("return document.documentElement.scrollWidth") <= 820
        for name in ("temperature", "tempo", "key_lock", "panic"):
            element = browser.find_element(By.CSS_SELECTOR, f'[data-control="{name}"]')
            assert element.is_displayed() and element.rect["height"] >= 44, name  # a finger's size
        roll = browser.find_element(By.CSS_SELECTOR, '[data-view="roll"]').rect
        assert roll["width"] >= 700 and roll["height"] >= 250, roll
    finally:
        _viewport(browser, 1280, 800)


def test_the_refusals_hold_in_the_browser(browser, run, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(f"{run.base}/")
    assert "unauthorized" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(f"{run.base}/?token={'A' * len(run.token)}")
    assert "unauthorized" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(f"http://{REBOUND}:{run.port}/?token={run.token}")  # DNS rebinding: the right token, a foreign name
    assert "forbidden" in browser.find_element(By.TAG_NAME, "body").text
    before = run.status()["temperature"]
    # a foreign page (another origin on this machine) that even knows the token cannot drive the instrument
    (tmp_path / "index.html").write_text("<!doctype html><title>elsewhere</title>")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    foreign = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=foreign.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{foreign.server_address[1]}/")
        answer = browser.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch(arguments[0], {method: "POST", mode: "no-cors", body: JSON.stringify({name: "temperature", value: 1.99})})
              .then(() => fetch(arguments[1]).then(r => done("read " + r.status), e => done("blocked: " + e)))
              .catch(e => done("blocked: " + e));
        """, f"{run.base}/api/control?token={run.token}", f"{run.base}/api/status?token={run.token}")
        assert answer.startswith("blocked"), answer  # not readable from there either
    finally:
        foreign.shutdown()
    time.sleep(0.3)
    assert run.status()["temperature"] == before
    # a bad value from the page itself: 400, the reason shown, nothing changed
    _open(browser, run)
    code = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch("/api/control", {method: "POST", headers: {Authorization: "Bearer " + arguments[0]},
                               body: JSON.stringify({name: "temperature", value: 9})})
          .then(async r => done([r.status, await r.text()]));
    """, run.token)
    assert code[0] == 400 and json.loads(code[1]) == {"error": "temperature: value 9 is outside 0.1..2"}
    browser.execute_script("control('tempo', 999)")
    assert _wait(lambda: "outside" in browser.find_element(By.CSS_SELECTOR, ".feedback").text)
    assert run.status()["temperature"] == before and run.status()["bpm"] == pytest.approx(120)


def test_ctrl_c_with_the_page_open_ends_cleanly_with_nothing_sounding(browser, jack_server, tmp_path):
    from selenium.webdriver.common.by import By

    ended = Run(jack_server, tmp_path, "--mode", "accompany", "--seed-midi", str(ROOT / "examples" / "seed_held_chords.mid"))
    try:
        _open(browser, ended)
        assert _wait(lambda: [m for _, m in ended.listener.snapshot() if m.type == "note_on" and m.velocity], timeout=15)
        assert _wait(lambda: _drawn(browser, "model"))
        stopped = time.monotonic()
        ended.proc.send_signal(signal.SIGINT)
        assert ended.proc.wait(timeout=20) == 0, "\n".join(ended.lines)
        took = time.monotonic() - stopped
        ended.wait_line(re.compile(r"^lofi-live: stopped after \d+ steps"))
        ended.wait_line(re.compile(r"^lofi-live: wrote .*jam\.mid$"))
        time.sleep(0.3)
        events = ended.listener.snapshot()
        assert still_sounding(events) == [], events[-20:]
        assert any(m.type == "control_change" and m.control == 123 and m.channel == 0 for _, m in events)
        print(f"\nCtrl-C with the page open: lofi-live ended {took:.1f} s after the signal")
        assert took < 15, (took, ended.lines)  # a loaded 2-core machine; about 1-2 s when it is quiet
        assert _wait(lambda: browser.find_element(By.CSS_SELECTOR, '[data-text="transport"]').text
                     in ("lofi-live ended", "stopped") or browser.execute_script("return document.body.dataset.connected") == "no")
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"{ended.base}/api/status?token={ended.token}", timeout=2)
    finally:
        ended.close()


def test_run_sh_play_web_on_a_fresh_machine_opens_in_chromium(browser, tmp_path):
    """The issue's check as a new user makes it: ``./run.sh play --web 0`` (installing the runtime and the
    [web] extra, starting a JACK server of its own), the printed URL opened in Chromium, the temperature
    knob moved, ``GET /api/status`` following, Ctrl-C."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    if not (shutil.which("jackd") and shutil.which("jack_wait")):
        pytest.skip("jackd not installed (./run.sh test installs jackd2 with apt-get)")
    if os.path.exists("/dev/snd/seq"):
        pytest.skip("run.sh play starts JACK only on Linux without an ALSA sequencer; this machine has one")
    env = {key: value for key, value in os.environ.items()
           if key not in ("LOFI_LIVE_MIDI_BACKEND", "LOFI_LIVE_MODEL", "VIRTUAL_ENV", "PYTHONPATH")}
    env.update(JACK_DEFAULT_SERVER=f"lofi-web-run-sh-{os.getpid()}", TMPDIR=str(tmp_path))
    out, err = tmp_path / "play.out", tmp_path / "play.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        play = subprocess.Popen(["./run.sh", "play", "--web", "0", "--bpm", "120"], cwd=ROOT, env=env,
                                stdout=stdout, stderr=stderr)
    try:
        deadline = time.monotonic() + 600  # the first call installs .venv-runtime: minutes
        found = None
        while found is None:
            found = next((m for m in map(URL_LINE.match, out.read_text().splitlines()) if m), None)
            assert play.poll() is None, err.read_text()
            assert time.monotonic() < deadline, out.read_text() + err.read_text()
            time.sleep(0.2)
        url, port, token = found.groups()
        browser.get(url)
        assert _wait(lambda: browser.execute_script("return document.body.dataset.connected === 'yes'"))
        assert browser.find_element(By.CSS_SELECTOR, 'svg[data-view="roll"]').is_displayed()
        browser.find_element(By.CSS_SELECTOR, '[data-control="temperature"]').send_keys(Keys.END)

        def temperature() -> float:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=10) as answer:
                return json.loads(answer.read())["temperature"]

        assert _wait(lambda: temperature() == pytest.approx(2.0))
        play.send_signal(signal.SIGINT)  # run.sh execs lofi-live: Ctrl-C to the engine
        assert play.wait(timeout=30) == 0, err.read_text()
        assert "lofi-live: stopped after" in out.read_text()
    finally:
        if play.poll() is None:
            play.kill()
            play.wait(timeout=10)
        started = re.search(r"started a JACK server .*\(pid (\d+)", err.read_text())
        if started and Path(f"/proc/{started.group(1)}/comm").exists() and \
                Path(f"/proc/{started.group(1)}/comm").read_text().strip() == "jackd":
            os.kill(int(started.group(1)), signal.SIGTERM)
