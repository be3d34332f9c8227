"""The control surface's server (``lofi-live run --web``): its API and its refusals, on a real engine.

The engine here is the real one on the shipped model (ONNX Runtime), playing in accompany mode into
a list; the server is the real uvicorn thread on a real socket, spoken to over HTTP with the standard
library, so every header (Host, Origin, chunked bodies) is exactly what the test writes. The page in a
browser, over real JACK ports, is ``tests/test_web_browser.py``.
"""

from __future__ import annotations

import http.client
import io
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import mido
import pytest

pytest.importorskip("starlette", reason="the [web] extra is not installed (pip install -e '.[web]')")
pytest.importorskip("uvicorn", reason="the [web] extra is not installed (pip install -e '.[web]')")

from lofi_live.commands.generate import make_sampler  # noqa: E402
from lofi_live.errors import LofiError  # noqa: E402
from lofi_live.live.controls import ACTIONS, ControlMap  # noqa: E402
from lofi_live.live.engine import Engine, EngineConfig  # noqa: E402
from lofi_live.live.web import address as addresses  # noqa: E402
from lofi_live.live.web.app import MAX_STREAMS  # noqa: E402
from lofi_live.live.web.guard import Bucket  # noqa: E402
from lofi_live.live.web.server import WebSurface, open_surface  # noqa: E402
from lofi_live.model.loader import Model  # noqa: E402
from lofi_live.recording.session import Session  # noqa: E402
from lofi_live.tokens.midi import file_tokens  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


class Client:
    """HTTP to the surface, every header as given (no Host or Origin added behind the test's back)."""

    def __init__(self, surface: WebSurface) -> None:
        self.port, self.token = surface.port, surface.token
        self.host = f"127.0.0.1:{self.port}"

    def call(self, method: str, path: str, body: bytes | None = None, token: bool = True, headers: dict | None = None,
             chunks: list[bytes] | None = None) -> tuple[int, dict, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)  # a PNG on a loaded machine
        sent = {"Host": self.host}
        if token:
            sent["Authorization"] = f"Bearer {self.token}"
        sent.update(headers or {})
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for key, value in sent.items():
            connection.putheader(key, value)
        if chunks is not None:
            connection.putheader("Transfer-Encoding", "chunked")
            connection.endheaders()
            for chunk in chunks:
                connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            connection.send(b"0\r\n\r\n")
        else:
            if body is not None:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
        answer = connection.getresponse()
        data = answer.read()
        connection.close()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, data

    def status(self) -> dict:
        code, _, data = self.call("GET", "/api/status")
        assert code == 200, data
        return json.loads(data)

    def control(self, name, value=None, **kwargs) -> tuple[int, dict]:
        code, _, data = self.call("POST", "/api/control", json.dumps({"name": name, "value": value}).encode(), **kwargs)
        return code, json.loads(data)


def _wait(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    """The real engine on the shipped model, accompanying a seed in a recorded session, with its surface."""
    folder = tmp_path_factory.mktemp("sessions")
    model = Model.load(None)
    sent: list[mido.Message] = []
    engine = Engine(model, make_sampler(model, 1.0, 8, 1, None), send=sent.append,
                    config=EngineConfig(bpm=120, mode="accompany", response_bars=64, realtime=False),
                    controls=ControlMap({"temperature": 21, "mode": 25, "key_lock": 26}))
    engine.prime(file_tokens(ROOT / "examples" / "seed_held_chords.mid", model.tokens))
    record = folder / "jam.mid"
    session = Session(120, record)
    engine.session = session
    shutil.copy(ROOT / "examples" / "session.mid.journal", folder / "earlier.mid.journal")  # a finished session
    shutil.copy(ROOT / "examples" / "session.mid", folder / "earlier.mid")
    engine.start()
    engine.web_actions = []  # every action the surface queued, in order

    def control(action) -> None:
        engine.web_actions.append(action)
        engine.control(action)

    surface = WebSurface(addresses.parse("0"), engine.snapshot, control, n_models=1, folder=folder, current=record)
    surface.start()
    flusher = threading.Event()
    threading.Thread(target=lambda: [session.flush() for _ in iter(lambda: flusher.wait(0.2), True)], daemon=True).start()
    yield engine, surface, Client(surface), sent, folder
    flusher.set()
    surface.stop()
    engine.stop()
    engine.join(5)
    session.close()


# ---------------------------------------------------------------------------------------------
# --web's address, and the extra


@pytest.mark.parametrize("text, host, port, explicit", [
    ("0", "127.0.0.1", 0, False), ("8765", "127.0.0.1", 8765, False), ("localhost:9000", "localhost", 9000, True),
    ("[::1]:0", "::1", 0, True), ("192.168.1.20:8765", "192.168.1.20", 8765, True)])
def test_web_address_is_port_or_host_and_port(text, host, port, explicit):
    parsed = addresses.parse(text)
    assert (parsed.host, parsed.port, parsed.explicit_host) == (host, port, explicit)
    assert parsed.loopback == (host in ("127.0.0.1", "localhost", "::1"))


@pytest.mark.parametrize("text, says", [("", "PORT must be"), ("http", "PORT must be"), ("70000", "PORT must be"),
                                        (":80", "HOST is empty"), ("0.0.0.0:80", "every network"),
                                        ("[::]:80", "every network"), ("[::1]80", "IPv6")])
def test_a_bad_web_address_is_one_line(text, says):
    with pytest.raises(LofiError, match=says) as caught:
        addresses.parse(text)
    assert "\n" not in str(caught.value)


def test_web_without_the_extra_is_one_line_and_exit_2():
    code = ("import sys; sys.modules['starlette'] = None; from lofi_live.cli import main; "
            "sys.exit(main(['run', '--web', '0', '--quiet']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert done.stderr.strip().splitlines() == ["lofi-live: error: --web needs the [web] extra: pip install 'lofi-live[web]'"]


def test_a_taken_port_is_one_line():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        with pytest.raises(LofiError, match="cannot listen on 127.0.0.1"):
            addresses.bind(addresses.parse(str(taken.getsockname()[1])))
    finally:
        taken.close()


def test_the_control_bucket_allows_its_rate_and_no_more():
    now = [0.0]
    bucket = Bucket(rate=10, burst=5, clock=lambda: now[0])
    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    now[0] += 0.25  # 2.5 more allowed
    assert [bucket.take() for _ in range(3)] == [True, True, False]


# ---------------------------------------------------------------------------------------------
# The API on the real engine


def test_the_token_is_long_and_required_everywhere(played):
    _, surface, client, _, _ = played
    assert len(surface.token) >= 43  # 32 random bytes, URL-safe: 256 bits
    assert surface.url == f"http://127.0.0.1:{surface.port}/?token={surface.token}"
    for path in ("/", "/api/status", "/api/events", "/api/controls", "/api/sessions", "/api/sessions/jam.mid",
                 "/static/app.js", "/nowhere"):
        code, headers, data = client.call("GET", path, token=False)
        assert code == 401, path
        assert json.loads(data)["error"].startswith("unauthorized") and data.count(b"\n") == 1
    assert client.call("GET", "/api/status?token=" + "x" * len(surface.token), token=False)[0] == 401
    assert client.call("GET", "/api/status", token=False, headers={"Authorization": "Bearer nope"})[0] == 401
    assert client.call("GET", f"/api/status?token={surface.token}", token=False)[0] == 200
    assert client.control("temperature", 0.7, token=False)[0] == 401


def test_foreign_origin_or_host_is_403_and_changes_nothing(played):
    engine, _, client, _, _ = played
    before = engine.snapshot().temperature
    for headers in ({"Origin": "http://evil.example"}, {"Origin": f"http://127.0.0.1:{client.port + 1}"},
                    {"Origin": "null"}, {"Host": f"evil.example:{client.port}"}, {"Host": "127.0.0.1"},
                    {"Sec-Fetch-Site": "cross-site"}):
        code, answer = client.control("temperature", 1.9, headers=headers)
        assert code == 403, headers
        assert answer["error"].startswith("forbidden")
        assert client.call("GET", "/api/status", headers=headers)[0] == 403
    time.sleep(0.2)
    assert engine.snapshot().temperature == before
    # the served origin, under the machine's other names too
    for origin in (f"http://127.0.0.1:{client.port}", f"http://localhost:{client.port}"):
        assert client.call("GET", "/api/status", headers={"Origin": origin})[0] == 200
    assert client.call("GET", "/api/status", headers={"Host": f"localhost:{client.port}"})[0] == 200


def test_every_answer_forbids_framing_sniffing_caching_and_referrers(played):
    _, _, client, _, _ = played
    for path, token in (("/", True), ("/api/status", True), ("/api/status", False)):
        _, headers, _ = client.call("GET", path, token=token)
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"


def test_status_is_the_published_snapshot(played):
    engine, _, client, _, _ = played
    assert _wait(lambda: client.status()["notes"]["model"] > 0), "the model never played"
    status = client.status()
    for key in ("bpm", "mode", "temperature", "swing", "key", "key_lock", "playing", "state", "notes", "notice",
                "step", "recent", "running"):
        assert key in status, key
    assert status["playing"] is True and status["mode"] == "accompany" and status["bpm"] == pytest.approx(120)
    snapshot = engine.snapshot()
    assert status["step"] <= snapshot.step and status["notes"]["model"] <= snapshot.notes_model
    assert ("variation" in status) == hasattr(snapshot, "variation")  # shown once the engine has it, never faked


def test_a_control_reaches_the_engine_as_a_cc_would(played):
    engine, _, client, _, _ = played
    for name, value, field in (("temperature", 0.42, "temperature"), ("swing", 62.5, "swing"),
                               ("tempo", 100.0, "bpm"), ("mode", "continue", "mode"), ("mode", "accompany", "mode"),
                               ("key_lock", True, "key_lock"), ("key_lock", False, "key_lock"),
                               ("response_bars", 16, "response_bars"), ("tempo", 120.0, "bpm")):
        code, answer = client.control(name, value)
        assert code == 200 and answer == {"queued": {"name": name, "value": value}}
        assert (engine.web_actions[-1].kind, engine.web_actions[-1].value) == (name, value)
        assert _wait(lambda: client.status()[field] == pytest.approx(value)), (name, value, client.status()[field])
    assert engine.controls.key_lock is False and engine.controls.mode == "accompany"  # the CC toggles follow
    assert client.control("panic")[0] == 200
    code, answer = client.control("loop")
    assert code == 200


@pytest.mark.parametrize("body, says", [
    (b'{"name": "volume", "value": 1}', "unknown control 'volume'"),
    (b'{"name": "temperature", "value": 2.5}', "outside 0.1..2"),
    (b'{"name": "temperature", "value": "hot"}', "must be a number"),
    (b'{"name": "temperature", "value": true}', "must be a number"),
    (b'{"name": "temperature", "value": NaN}', "not JSON"),
    (b'{"name": "temperature", "value": 1e999}', "must be a number"),
    (b'{"name": "tempo", "value": 40}', "outside 60..180"),
    (b'{"name": "swing", "value": 80}', "outside 50..75"),
    (b'{"name": "response_bars", "value": 2.5}', "whole number"),
    (b'{"name": "model_select", "value": 1}', "outside 0..0"),
    (b'{"name": "mode", "value": "solo"}', "one of continue, accompany"),
    (b'{"name": "key_lock", "value": 1}', "true or false"),
    (b'{"name": "panic", "value": 1}', "takes no value"),
    (b'{"name": "variation", "value": 1.5}', "outside 0..1"),
    (b'{"value": 1}', "JSON object"),
    (b'{"name": "temperature", "value": 1, "also": 2}', "JSON object"),
    (b'["temperature", 1]', "JSON object"),
    (b'{"name": "temp', "not JSON"),
    (b'\xff\xfe', "not JSON"),
])
def test_a_bad_control_is_400_one_line_and_changes_nothing(played, body, says):
    engine, _, client, _, _ = played
    before = engine.snapshot()
    queued = len(engine.web_actions)
    code, headers, data = client.call("POST", "/api/control", body, headers={"Content-Type": "application/json"})
    assert code == 400, data
    assert headers["content-type"] == "application/json" and data.count(b"\n") == 1
    assert says in json.loads(data)["error"]
    time.sleep(0.1)
    after = engine.snapshot()
    assert (after.temperature, after.bpm, after.mode, after.swing, after.key_lock, after.response_bars) == \
        (before.temperature, before.bpm, before.mode, before.swing, before.key_lock, before.response_bars)
    assert len(engine.web_actions) == queued  # nothing reached the engine's queue


def test_large_bodies_are_refused_before_they_are_read(played):
    _, _, client, _, _ = played
    big = json.dumps({"name": "temperature", "value": 1.0, "pad": "x" * 5000}).encode()
    assert client.call("POST", "/api/control", big)[0] == 413
    code, _, data = client.call("POST", "/api/control", chunks=[b"{" + b" " * 600] * 4)
    assert code == 413 and b"over 1024 bytes" in data


def test_a_flood_of_controls_is_limited_and_panic_still_gets_through(played):
    engine, _, client, _, _ = played
    time.sleep(1.0)  # a full bucket
    codes = [client.control("temperature", 0.5 + i / 1000)[0] for i in range(60)]
    assert codes.count(200) >= 15 and codes.count(429) >= 10, codes
    assert client.control("panic")[0] == 200
    time.sleep(1.0)
    assert client.control("temperature", 1.0)[0] == 200


def test_events_stream_new_snapshots_at_10_hz_or_more(played):
    _, surface, _, _, _ = played
    connection = http.client.HTTPConnection("127.0.0.1", surface.port, timeout=10)
    connection.request("GET", f"/api/events?token={surface.token}")
    answer = connection.getresponse()
    assert answer.status == 200 and answer.getheader("content-type").startswith("text/event-stream")
    steps, started = [], time.monotonic()
    while time.monotonic() - started < 2.0:
        line = answer.readline()
        if line.startswith(b"data: "):
            steps.append(json.loads(line[6:])["step"])
    connection.close()
    print(f"\n{len(steps)} snapshots in 2 s")
    assert len(steps) >= 20
    assert steps == sorted(steps) and steps[-1] > steps[0]


def test_event_streams_are_limited(played):
    _, surface, client, _, _ = played
    opened = []
    try:
        for _ in range(MAX_STREAMS):
            connection = http.client.HTTPConnection("127.0.0.1", surface.port, timeout=10)
            connection.request("GET", f"/api/events?token={surface.token}")
            answer = connection.getresponse()
            assert answer.status == 200 and answer.readline().startswith(b"data: ")
            opened.append(connection)
        code, _, data = client.call("GET", "/api/events")
        assert code == 503 and b"already 8 pages open" in data
    finally:
        for connection in opened:
            connection.close()

    def one_more() -> bool:  # the closed pages' streams end: a page can open one again
        connection = http.client.HTTPConnection("127.0.0.1", surface.port, timeout=10)
        connection.request("GET", f"/api/events?token={surface.token}")
        status = connection.getresponse().status
        connection.close()
        return status == 200

    assert _wait(one_more)


def test_sessions_are_listed_and_downloadable_as_mid_and_png(played):
    engine, _, client, _, folder = played
    assert _wait(lambda: engine.snapshot().notes_model >= 4)
    code, _, data = client.call("GET", "/api/sessions")
    listed = {row["name"]: row for row in json.loads(data)["sessions"]}
    assert listed["jam"]["recording"] is True and listed["jam"]["finished"] is False
    assert listed["earlier"]["recording"] is False and listed["earlier"]["finished"] is True
    code, _, data = client.call("GET", "/api/sessions/earlier.mid")
    assert code == 200 and data == (folder / "earlier.mid").read_bytes()  # a finished session: its own file
    code, headers, data = client.call("GET", "/api/sessions/jam.mid")
    assert code == 200 and headers["content-type"] == "audio/midi"
    midi = mido.MidiFile(file=io.BytesIO(data))
    names = [track.name for track in midi.tracks]
    assert "model" in names
    notes = [m for t in midi.tracks if t.name == "model" for m in t if m.type == "note_on" and m.velocity]
    assert notes, names
    code, headers, data = client.call("GET", "/api/sessions/jam.png")
    assert code == 200 and headers["content-type"] == "image/png" and data.startswith(b"\x89PNG")
    for path in ("/api/sessions/nothing.mid", "/api/sessions/..%2Fjam.mid", "/api/sessions/jam.txt",
                 "/api/sessions/%2Fetc%2Fpasswd.mid"):
        assert client.call("GET", path)[0] == 404, path


def test_the_page_and_its_assets_come_from_the_package(played):
    _, surface, client, _, _ = played
    code, headers, page = client.call("GET", "/")
    assert code == 200 and headers["content-type"].startswith("text/html")
    text = page.decode()
    assert 'data-view="roll"' in text and f'content="{surface.token}"' in text
    for name in ("temperature", "swing", "tempo", "variation"):
        assert f'data-knob="{name}"' in text
    for name in ("mode", "key_lock", "panic"):
        assert f'data-control="{name}"' in text
    outside = text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a namespace, not an address
    assert "http://" not in outside and "https://" not in outside and "//" not in outside  # nothing from a CDN
    for asset in ("/static/app.js", "/static/style.css"):
        code, headers, data = client.call("GET", asset)
        assert code == 200 and len(data) > 1000, asset
    code, _, data = client.call("GET", "/api/controls")
    names = [each["name"] for each in json.loads(data)["controls"]]
    assert names == list(ACTIONS)


def test_stop_ends_open_event_streams_at_once(played):
    engine, _, _, _, folder = played
    other = WebSurface(addresses.parse("0"), engine.snapshot, engine.control, folder=folder)
    other.start()
    connection = http.client.HTTPConnection("127.0.0.1", other.port, timeout=10)
    connection.request("GET", f"/api/events?token={other.token}")
    answer = connection.getresponse()
    assert answer.readline().startswith(b"data: ")
    started = time.monotonic()
    other.stop()
    took = time.monotonic() - started
    connection.close()
    assert took < 2.0, took
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", other.port), timeout=1).close()


def _lan_address() -> str | None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: it only picks the outgoing interface
        found = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if addresses.is_loopback(found) else found


def test_a_non_loopback_host_must_be_named_and_is_warned_about(played, capsys):
    engine, _, _, _, folder = played
    lan = _lan_address()
    if lan is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    surface = open_surface(f"{lan}:0", engine, None, 1, None)
    try:
        printed = capsys.readouterr().out.splitlines()
        assert printed[0].startswith(f"lofi-live: warning: the control surface listens on {lan}, beyond this machine")
        assert printed[1] == f"lofi-live: control surface http://{lan}:{surface.port}/?token={surface.token}"
        connection = http.client.HTTPConnection(lan, surface.port, timeout=10)
        connection.request("GET", f"/api/status?token={surface.token}")
        assert connection.getresponse().status == 200
        connection.close()
        connection = http.client.HTTPConnection(lan, surface.port, timeout=10)
        connection.request("GET", f"/api/status?token={surface.token}", headers={"Host": f"127.0.0.1:{surface.port}"})
        assert connection.getresponse().status == 403  # bound to the LAN address: only its name is served
        connection.close()
    finally:
        surface.stop()
