// The microphone page: AudioContext -> AudioWorklet (worklet.js) -> websocket (/v1/stream, the native
// protocol) -> live partials and finals with word times. Everything that can fail before the microphone is
// readied first (context, worklet, socket), and the microphone is opened last.
"use strict";
const $ = (id) => document.getElementById(id);
let session = null;

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function showFinal(seg) {
  const li = document.createElement("li");
  const text = document.createElement("div");
  text.className = "text";
  text.textContent = seg.text;
  const words = document.createElement("div");
  words.className = "words";
  words.textContent = seg.words.map((w) => `${w.word} ${w.start.toFixed(2)}-${w.end.toFixed(2)}s`).join(", ");
  li.append(text, words);
  $("finals").append(li);
  $("partial").textContent = "";
}

function socketURL() {
  const url = new URL("/v1/stream", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const token = new URLSearchParams(location.search).get("token");
  if (token) url.searchParams.set("token", token);
  return url.href;
}

function openSocket(rate) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(socketURL());
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { ws.send(JSON.stringify({ config: { sample_rate: rate } })); resolve(ws); };
    ws.onerror = () => reject(new Error("cannot reach the server"));
  });
}

async function start() {
  $("start").disabled = true;
  $("finals").replaceChildren();
  $("partial").textContent = "";
  const s = { ctx: null, ws: null, node: null, stream: null, ended: false };
  session = s;
  try {
    status("starting");
    s.ctx = new AudioContext();  // its own rate: the server resamples exactly, so never force 16 or 48 kHz
    await s.ctx.audioWorklet.addModule("/web/worklet.js");
    s.node = new AudioWorkletNode(s.ctx, "pcm-sender", { numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1,
                                                          channelCountMode: "explicit" });
    s.ws = await openSocket(s.ctx.sampleRate);
    s.ws.onmessage = (e) => receive(s, JSON.parse(e.data));
    s.ws.onclose = (e) => closed(s, e);
    s.node.port.onmessage = (e) => {
      if (e.data === "flushed") s.ws.send(JSON.stringify({ eof: 1 }));
      else if (s.ws.readyState === WebSocket.OPEN) s.ws.send(e.data);
    };
    if (!navigator.mediaDevices) throw Object.assign(new Error("no microphone API: this page is not a secure context"),
                                                     { name: "NotAllowedError" });
    s.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
    });
    s.ctx.createMediaStreamSource(s.stream).connect(s.node);
    s.node.connect(s.ctx.destination);  // pulls the worklet; it outputs silence
    status(`listening (${s.ctx.sampleRate} Hz)`);
    $("stop").disabled = false;
  } catch (err) {
    const refused = err.name === "NotAllowedError" || err.name === "SecurityError";
    status(refused ? `microphone refused: ${err.message}` : `error: ${err.message}`, true);
    teardown(s);
    $("start").disabled = false;
  }
}

function stop() {
  const s = session;
  $("stop").disabled = true;
  if (!s) return;
  status("finishing");
  s.ended = true;
  if (s.stream) s.stream.getTracks().forEach((t) => t.stop());
  s.node.port.postMessage("flush");  // the worklet sends what it holds, then we send eof
}

function receive(s, msg) {
  if (msg.type === "partial") $("partial").textContent = msg.text;
  else if (msg.type === "final") showFinal(msg);
  else if (msg.type === "eof") s.done = true;
}

function closed(s, e) {
  if (s.done && s.ended) status("done");
  else status(`connection lost (code ${e.code}${e.reason ? ": " + e.reason : ""})`, true);
  teardown(s);
  $("start").disabled = false;
  $("stop").disabled = true;
}

function teardown(s) {
  if (s.ws) s.ws.onclose = null;  // a close we cause must not replace the status that says why
  if (s.stream) s.stream.getTracks().forEach((t) => t.stop());
  if (s.ctx && s.ctx.state !== "closed") s.ctx.close();
  if (s.ws && s.ws.readyState === WebSocket.OPEN && !s.ended) s.ws.close();
}

if (!window.isSecureContext) $("secure").hidden = false;
$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
