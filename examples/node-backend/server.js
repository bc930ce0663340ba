// A recordings backend on Node's own http server, standard library only: the download with
// HTTP Range (suffix ranges included), Twilio's signed status webhook with a pre-download, and
// a health check, under the same environment contract as the reference backend (TWILIO_*,
// RECORDINGS_DIR, PUBLIC_URL). Node keeps an idle connection 5 s by default
// (server.keepAliveTimeout); `--keep-alive-timeout MS` sets it. `--fd N` serves on a socket the
// caller bound (the harness's `listen = "fd"`), else PORT (default 8000).
"use strict";
const http = require("node:http");
const fs = require("node:fs");
const path = require("node:path");
const crypto = require("node:crypto");

const env = process.env;
const ACCOUNT_SID = env.TWILIO_ACCOUNT_SID;
const AUTH_TOKEN = env.TWILIO_AUTH_TOKEN;
const API_BASE = (env.TWILIO_API_BASE || "https://api.twilio.com").replace(/\/+$/, "");
const DIR = env.RECORDINGS_DIR || "recordings";
const TWILIO_TIMEOUT_MS = 1000 * Number(env.TWILIO_TIMEOUT_SECS || 30);
const CALL_SID = /^CA[0-9a-fA-F]{32}$/;
const calls = new Map(); // call SID → recording SID
const downloads = new Map(); // recording SID → promise of the cached file
fs.mkdirSync(DIR, { recursive: true });

function arg(name) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}

function json(res, status, body) {
  const payload = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { "content-type": "application/json", "content-length": payload.length });
  res.end(payload);
}

async function twilio(url) {
  const auth = Buffer.from(`${ACCOUNT_SID}:${AUTH_TOKEN}`).toString("base64");
  const r = await fetch(url, { headers: { authorization: `Basic ${auth}` }, signal: AbortSignal.timeout(TWILIO_TIMEOUT_MS) });
  if (!r.ok) throw Object.assign(new Error(`Twilio answered ${r.status}`), { status: r.status });
  return Buffer.from(await r.arrayBuffer());
}

async function recordingFor(callSid) {
  if (calls.has(callSid)) return calls.get(callSid);
  const page = JSON.parse(await twilio(`${API_BASE}/2010-04-01/Accounts/${ACCOUNT_SID}/Calls/${callSid}/Recordings.json`));
  const done = (page.recordings || []).find((r) => r.status === "completed");
  if (done) calls.set(callSid, done.sid);
  return done ? done.sid : null;
}

// One download per recording at a time; the file appears only when complete.
function cached(callSid, recordingSid) {
  const file = path.join(DIR, `${recordingSid}.mp3`);
  if (fs.existsSync(file)) return Promise.resolve(file);
  if (!downloads.has(recordingSid)) {
    console.log(`Cache miss - downloading from Twilio for ${callSid}`);
    const started = Date.now();
    const p = twilio(`${API_BASE}/2010-04-01/Accounts/${ACCOUNT_SID}/Recordings/${recordingSid}.mp3`)
      .then((data) => {
        fs.writeFileSync(`${file}.part`, data);
        fs.renameSync(`${file}.part`, file);
        console.log(`Recording saved - took ${((Date.now() - started) / 1000).toFixed(2)}s`);
        return file;
      })
      .catch((e) => {
        console.log(e.status === 404 ? "Recording file not found at Twilio" : `Failed to fetch recording: ${e.message}`);
        throw e;
      })
      .finally(() => downloads.delete(recordingSid));
    downloads.set(recordingSid, p);
  }
  return downloads.get(recordingSid);
}

// RFC 9110 §14 for one range: [start, end], "unsatisfiable", or null (ignore the header).
function range(header, size) {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header || "");
  if (!m || (m[1] === "" && m[2] === "")) return null;
  if (m[1] === "") {
    const n = Number(m[2]);
    return n === 0 ? "unsatisfiable" : [Math.max(0, size - n), size - 1];
  }
  const start = Number(m[1]);
  const end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (m[2] !== "" && Number(m[2]) < start) return null;
  return start >= size ? "unsatisfiable" : [start, end];
}

async function download(req, res, callSid) {
  if (!CALL_SID.test(callSid)) return json(res, 400, { error: "Invalid call SID" });
  let file;
  try {
    const recordingSid = await recordingFor(callSid);
    if (!recordingSid) return json(res, 404, { error: "Recording URL not available" });
    file = await cached(callSid, recordingSid);
  } catch (e) {
    if (e.status === 404) return json(res, 404, { error: "Recording file not found" });
    return json(res, 503, { error: "Failed to fetch recording" });
  }
  const size = fs.statSync(file).size;
  const r = range(req.headers.range, size);
  if (r === "unsatisfiable") {
    res.writeHead(416, { "content-range": `bytes */${size}`, "content-length": 0 });
    return res.end();
  }
  const [start, end] = r || [0, size - 1];
  const headers = { "content-type": "audio/mpeg", "accept-ranges": "bytes", "content-length": end - start + 1 };
  if (r) headers["content-range"] = `bytes ${start}-${end}/${size}`;
  res.writeHead(r ? 206 : 200, headers);
  if (req.method === "HEAD") return res.end();
  fs.createReadStream(file, { start, end }).pipe(res);
}

async function webhook(req, res) {
  let body = "";
  for await (const chunk of req) body += chunk;
  const params = new URLSearchParams(body);
  const base = env.PUBLIC_URL || `http://${req.headers.host}`;
  const signed = base.replace(/\/+$/, "") + req.url + [...params.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => k + v).join("");
  const expected = crypto.createHmac("sha1", AUTH_TOKEN).update(signed).digest("base64");
  const given = req.headers["x-twilio-signature"] || "";
  if (given.length !== expected.length || !crypto.timingSafeEqual(Buffer.from(given), Buffer.from(expected))) {
    console.log("webhook rejected: bad X-Twilio-Signature");
    return json(res, 403, { error: "Invalid Twilio signature" });
  }
  if (params.get("RecordingStatus") === "completed") {
    calls.set(params.get("CallSid"), params.get("RecordingSid"));
    cached(params.get("CallSid"), params.get("RecordingSid")).catch(() => {}); // pre-download
  }
  res.writeHead(204);
  res.end();
}

const server = http.createServer((req, res) => {
  const m = /^\/api\/calls\/([^/]+)\/download$/.exec(req.url.split("?")[0]);
  const fail = () => (res.headersSent ? res.destroy() : json(res, 500, { error: "Internal error" }));
  if (m && (req.method === "GET" || req.method === "HEAD")) return download(req, res, m[1]).catch(fail);
  if (req.url === "/webhook/recording-status" && req.method === "POST") return webhook(req, res).catch(fail);
  if (req.url === "/healthz") return json(res, 200, { status: "ok" });
  json(res, 404, { error: "Not found" });
});
if (arg("--keep-alive-timeout")) server.keepAliveTimeout = Number(arg("--keep-alive-timeout"));
const listening = () => console.log(`listening (keepAliveTimeout ${server.keepAliveTimeout} ms)`);
if (arg("--fd")) server.listen({ fd: Number(arg("--fd")) }, listening);
else server.listen(Number(env.PORT || 8000), "127.0.0.1", listening);
process.on("SIGTERM", () => server.close(() => process.exit(0)));
