"""A recordings backend the way the background write-up describes its fixed Python service:
an ASGI app (served by uvicorn) that downloads a call's recording from Twilio on a cache miss,
caches it on disk, and serves it with HTTP Range support (including suffix ranges).

It is here so the harness can run every scenario against a backend that is not ours, through
examples/uvicorn-backend/stack.toml, and show where it behaves differently from the reference
backend. It follows the same environment contract (TWILIO_*, RECORDINGS_DIR, PUBLIC_URL, ...).
Standard library only, besides uvicorn.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import re
import sqlite3
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
log = logging.getLogger("recordings")

ACCOUNT_SID = os.environ["TWILIO_ACCOUNT_SID"]
AUTH_TOKEN = os.environ["TWILIO_AUTH_TOKEN"]
API_BASE = os.environ.get("TWILIO_API_BASE", "https://api.twilio.com").rstrip("/")
RECORDINGS_DIR = os.environ.get("RECORDINGS_DIR", "recordings")
PUBLIC_URL = os.environ.get("PUBLIC_URL")
SLOW_DOWNLOAD_SECS = float(os.environ.get("SLOW_DOWNLOAD_SECS", "10"))
TWILIO_TIMEOUT_SECS = float(os.environ.get("TWILIO_TIMEOUT_SECS", "30"))
# IGNORE_RANGE=1 reproduces the bug Range support fixes: every GET answered 200 with the whole
# file, whatever its Range (the harness's tests use it to show that a soak catches it).
IGNORE_RANGE = os.environ.get("IGNORE_RANGE") == "1"
CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

os.makedirs(RECORDINGS_DIR, exist_ok=True)
DB = sqlite3.connect(os.path.join(RECORDINGS_DIR, "calls.db"), check_same_thread=False)
DB.execute("CREATE TABLE IF NOT EXISTS calls (call_sid TEXT PRIMARY KEY, recording_sid TEXT, recording_url TEXT)")
DB.commit()


def twilio_get(url):
    auth = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(request, timeout=TWILIO_TIMEOUT_SECS) as response:
        return response.read()


def recording_for(call_sid):
    row = DB.execute("SELECT recording_sid FROM calls WHERE call_sid = ?", (call_sid,)).fetchone()
    if row:
        return row[0]
    url = f"{API_BASE}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{call_sid}/Recordings.json"
    page = json.loads(twilio_get(url))
    completed = [r for r in page.get("recordings", []) if r.get("status") == "completed"]
    if not completed:
        return None
    sid = completed[0]["sid"]
    DB.execute("INSERT OR REPLACE INTO calls VALUES (?, ?, ?)", (call_sid, sid, completed[0].get("media_url", "")))
    DB.commit()
    return sid


def download(call_sid, recording_sid, path):
    log.info("Cache miss - downloading from Twilio for %s", call_sid)
    started = time.monotonic()
    data = twilio_get(f"{API_BASE}/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{recording_sid}.mp3")
    # Written under a name of its own, then renamed: another instance sharing the folder (the
    # hardened profile runs two) never sees, and serves, a file half written.
    fd, part = tempfile.mkstemp(dir=RECORDINGS_DIR, suffix=".part")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(part, path)
    took = time.monotonic() - started
    if took > SLOW_DOWNLOAD_SECS:
        log.warning("Slow download detected (%.2fs) - consider pre-downloading", took)
    log.info("Recording saved - took %.2fs", took)


async def send_json(send, status, body):
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


async def serve_download(scope, send, call_sid):
    if not CALL_SID.match(call_sid):
        return await send_json(send, 400, {"error": "Invalid call SID"})
    try:
        recording_sid = await asyncio.to_thread(recording_for, call_sid)
    except Exception as e:  # noqa: BLE001 - every failure becomes a JSON error
        log.error("Failed to fetch recording: %s", e)
        return await send_json(send, 500, {"error": "Failed to fetch recording"})
    if not recording_sid:
        return await send_json(send, 404, {"error": "Recording URL not available"})
    path = os.path.join(RECORDINGS_DIR, f"{recording_sid}.mp3")
    if not os.path.exists(path):
        try:
            await asyncio.to_thread(download, call_sid, recording_sid, path)
        except urllib.error.HTTPError as e:
            log.error("Failed to fetch recording: Twilio answered %s", e.code)
            if e.code == 404:
                return await send_json(send, 404, {"error": "Recording file not found"})
            return await send_json(send, 500, {"error": "Failed to fetch recording"})
        except Exception as e:  # noqa: BLE001
            log.error("Failed to fetch recording: %s", e)
            return await send_json(send, 500, {"error": "Failed to fetch recording"})
    if not os.path.exists(path):
        return await send_json(send, 404, {"error": "Recording file not found"})

    size = os.path.getsize(path)
    start, end, status = 0, size - 1, 200
    headers = dict((k.decode().lower(), v.decode()) for k, v in scope["headers"])
    match = None if IGNORE_RANGE else RANGE.match(headers.get("range", ""))
    if match:
        first, last = match.groups()
        if first == "" and last != "":
            start, end = max(0, size - int(last)), size - 1       # suffix: the last N bytes
        elif first != "":
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        if first == "" and last == "0" or start >= size:
            await send({"type": "http.response.start", "status": 416,
                        "headers": [(b"content-range", f"bytes */{size}".encode()), (b"content-length", b"0")]})
            return await send({"type": "http.response.body", "body": b""})
        if start <= end:
            status = 206
        else:
            start, end = 0, size - 1
    out = [(b"content-type", b"audio/mpeg"), (b"accept-ranges", b"bytes"),
           (b"content-length", str(end - start + 1).encode())]
    if status == 206:
        out.append((b"content-range", f"bytes {start}-{end}/{size}".encode()))
    await send({"type": "http.response.start", "status": status, "headers": out})
    if scope["method"] == "HEAD":
        return await send({"type": "http.response.body", "body": b""})
    with open(path, "rb") as f:
        f.seek(start)
        left = end - start + 1
        while left > 0:
            chunk = f.read(min(65536, left))
            left -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})


async def read_body(receive):
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def recording_status(scope, receive, send):
    params = urllib.parse.parse_qsl((await read_body(receive)).decode())
    headers = dict((k.decode().lower(), v.decode()) for k, v in scope["headers"])
    base = PUBLIC_URL or f"http://{headers.get('host', 'localhost')}"
    query = scope.get("query_string", b"").decode()
    url = base.rstrip("/") + scope["path"] + (f"?{query}" if query else "")
    signed = url + "".join(k + v for k, v in sorted(params))
    expected = base64.b64encode(hmac.new(AUTH_TOKEN.encode(), signed.encode(), hashlib.sha1).digest()).decode()
    if not hmac.compare_digest(expected, headers.get("x-twilio-signature", "")):
        return await send_json(send, 403, {"error": "Invalid Twilio signature"})
    fields = dict(params)
    if fields.get("RecordingStatus") == "completed":
        DB.execute("INSERT OR REPLACE INTO calls VALUES (?, ?, ?)",
                   (fields["CallSid"], fields["RecordingSid"], fields.get("RecordingUrl", "")))
        DB.commit()
        path = os.path.join(RECORDINGS_DIR, f"{fields['RecordingSid']}.mp3")
        if not os.path.exists(path):
            # Best practice from the write-up: pre-download in the webhook.
            asyncio.get_running_loop().run_in_executor(None, download, fields["CallSid"], fields["RecordingSid"], path)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    match = re.match(r"^/api/calls/([^/]+)/download$", path)
    if match and scope["method"] in ("GET", "HEAD"):
        return await serve_download(scope, send, match.group(1))
    if path == "/webhook/recording-status" and scope["method"] == "POST":
        return await recording_status(scope, receive, send)
    if path == "/healthz":
        return await send_json(send, 200, {"status": "ok"})
    return await send_json(send, 404, {"error": "Not found"})
