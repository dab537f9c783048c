// Live captions: microphone -> AudioWorklet (16 kHz mono int16) -> protocol v1.1 over a
// WebSocket, with resume.  Captured audio stays in a replay buffer until the server acks it;
// when the socket drops, the page reconnects with backoff, sends `resume` and resends from the
// server's audio_offset, so no text is lost and no final is shown twice (finals carry a seq).
"use strict";

const RATE = 16000;
const FRAME = 1600; // samples per binary frame (100 ms)
const RETRYABLE = new Set(["overloaded", "store_unavailable", "internal_error", "model_error"]);
const $ = (id) => document.getElementById(id);

const S = {
  ws: null,
  sessionId: null,
  resumeToken: null,
  lastSeq: -1,
  finals: [],
  chunks: [], // replay buffer: [{start, data: Int16Array}], oldest first
  end: 0, // samples captured
  sentTo: 0, // samples sent on the current connection
  streaming: false, // the current connection is past ready/resumed
  captureTimes: [], // [end sample, performance.now()] per captured chunk: latency reference
  ending: false, // Stop pressed: send close once everything captured is sent
  closeSent: false,
  done: false,
  attempt: 0,
  resumes: 0,
  partials: 0,
  audio: null, // {ctx, stream, node}
};
window.rayscribe = S; // for the browser test and for debugging

function setStatus(state, note) {
  $("status").textContent = state;
  $("status").dataset.state = state;
  if (note !== undefined) $("notice").textContent = note;
}

function streamUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/v1/stream`;
}

// --- audio -------------------------------------------------------------------------------

async function startAudio() {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const ctx = new AudioContext(); // the device rate (44.1/48 kHz): the worklet downsamples
  await ctx.audioWorklet.addModule("/static/worklet.js");
  const node = new AudioWorkletNode(ctx, "rayscribe-capture");
  node.port.onmessage = (e) => {
    if (e.data.samples) capture(e.data.samples);
    else if (e.data.flushed && S.onFlushed) S.onFlushed();
  };
  ctx.createMediaStreamSource(stream).connect(node);
  node.connect(ctx.destination); // a node that reaches the destination is always pulled (its output is silence)
  await ctx.resume();
  S.audio = { ctx, stream, node };
}

async function stopAudio() {
  if (!S.audio) return;
  const { ctx, stream, node } = S.audio;
  S.audio = null; // once: Stop and the session's end may both get here
  stream.getTracks().forEach((t) => t.stop());
  await new Promise((resolve) => {
    S.onFlushed = resolve;
    node.port.postMessage("flush"); // the last partial chunk
  });
  await ctx.close();
}

function capture(data) {
  S.chunks.push({ start: S.end, data });
  S.end += data.length;
  S.captureTimes.push([S.end, performance.now()]);
  $("captured").textContent = (S.end / RATE).toFixed(1);
  pump();
}

function read(start, stop) {
  const out = new Int16Array(stop - start);
  for (const c of S.chunks) {
    const a = Math.max(start, c.start), b = Math.min(stop, c.start + c.data.length);
    if (a < b) out.set(c.data.subarray(a - c.start, b - c.start), a - start);
  }
  return out;
}

function ack(offsetSamples) {
  while (S.chunks.length && S.chunks[0].start + S.chunks[0].data.length <= offsetSamples) S.chunks.shift();
  // latency needs capture times only for audio no message has covered yet
  while (S.captureTimes.length > 1 && S.captureTimes[1][0] <= offsetSamples) S.captureTimes.shift();
}

function capturedAt(seconds) {
  const target = seconds * RATE - 1;
  for (const [end, at] of S.captureTimes) if (end >= target) return at;
  return null;
}

// --- socket ------------------------------------------------------------------------------

function pump() {
  if (!S.ws || S.ws.readyState !== WebSocket.OPEN || !S.streaming) return;
  while (S.sentTo < S.end) {
    const stop = Math.min(S.end, S.sentTo + FRAME);
    S.ws.send(read(S.sentTo, stop).buffer);
    S.sentTo = stop;
  }
  if (S.ending && !S.closeSent) {
    S.ws.send(JSON.stringify({ type: "close" }));
    S.closeSent = true;
  }
}

function connect() {
  const token = $("token").value.trim();
  // browsers cannot set headers on a WebSocket: the key travels as the subprotocol pair
  const ws = token ? new WebSocket(streamUrl(), ["token", token]) : new WebSocket(streamUrl());
  ws.binaryType = "arraybuffer";
  S.ws = ws;
  S.streaming = false;
  S.closeSent = false;
  ws.onopen = () => {
    if (S.sessionId === null) {
      ws.send(JSON.stringify({ type: "start", sample_rate: RATE, encoding: "pcm_s16le", protocol: "v1.1" }));
    } else {
      const from = S.chunks.length ? S.chunks[0].start : S.end;
      ws.send(JSON.stringify({
        type: "resume", session_id: S.sessionId, resume_token: S.resumeToken,
        last_seq: S.lastSeq, audio_from: from / RATE,
      }));
    }
  };
  ws.onmessage = (e) => onMessage(ws, JSON.parse(e.data));
  ws.onclose = (e) => onClose(ws, e);
}

function onMessage(ws, msg) {
  if (ws !== S.ws) return;
  switch (msg.type) {
    case "ready":
      S.sessionId = msg.session_id;
      S.resumeToken = msg.resume_token || null;
      $("session").textContent = msg.session_id.slice(0, 12);
      S.sentTo = 0;
      S.streaming = true;
      setStatus("streaming", "");
      pump();
      break;
    case "resumed":
      S.sentTo = Math.round(msg.audio_offset * RATE);
      S.attempt = 0;
      S.resumes += 1;
      $("resumes").textContent = String(S.resumes);
      S.streaming = true;
      setStatus("streaming", `resumed after a dropped connection (resending from ${msg.audio_offset.toFixed(1)} s)`);
      pump();
      break;
    case "partial":
      S.partials += 1;
      $("partial").textContent = msg.text;
      showLatency(msg.audio_end);
      break;
    case "final":
      if (msg.seq <= S.lastSeq) break; // replayed after a resume: already shown
      S.lastSeq = msg.seq;
      S.finals.push({ seq: msg.seq, text: msg.text, start: msg.start, end: msg.end, words: msg.words });
      renderFinal(msg);
      break;
    case "ack":
      S.attempt = 0;
      ack(Math.round(msg.audio_offset * RATE));
      break;
    case "error":
      if (RETRYABLE.has(msg.code) && S.resumeToken) break; // the close that follows resumes
      S.done = true;
      setStatus("error", `${msg.code}: ${msg.message}`);
      break;
    case "closed":
      S.done = true;
      $("partial").textContent = "";
      setStatus("closed", `${msg.summary.audio_seconds.toFixed(1)} s of audio, ${msg.summary.words} words`);
      break;
    default: // reconnect: the close (1012) that follows resumes
      break;
  }
}

function onClose(ws, e) {
  if (ws !== S.ws) return;
  S.streaming = false;
  if (S.done || !S.resumeToken) {
    if (!S.done) setStatus("error", `connection closed (${e.code}) before the session began`);
    finish();
    return;
  }
  S.attempt += 1;
  const delay = Math.min(5000, 100 * 2 ** (S.attempt - 1)) * (0.5 + Math.random());
  setStatus("reconnecting", `connection lost (${e.code}); resuming, attempt ${S.attempt}`);
  setTimeout(connect, delay);
}

function finish() {
  $("start").disabled = false;
  $("stop").disabled = true;
  stopAudio();
}

// --- view --------------------------------------------------------------------------------

function renderFinal(msg) {
  const span = document.createElement("span");
  span.className = "final";
  span.dataset.seq = String(msg.seq);
  span.textContent = (S.finals.length > 1 ? " " : "") + msg.text;
  $("finals").appendChild(span);
  $("final-count").textContent = String(S.finals.length);
  document.querySelectorAll(".download").forEach((b) => (b.disabled = false));
  showLatency(msg.end);
}

function showLatency(audioEnd) {
  const at = capturedAt(audioEnd);
  if (at === null) return;
  const s = (performance.now() - at) / 1000;
  $("latency").textContent = `latency ${s.toFixed(1)} s`;
  $("latency").dataset.level = s < 1.5 ? "ok" : s < 3 ? "slow" : "late";
}

function download(format) {
  const body = Captions[format](S.finals, S.sessionId);
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([body], { type: Captions.types[format] }));
  a.download = `transcript-${(S.sessionId || "rayscribe").slice(0, 8)}.${format}`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

// --- controls ----------------------------------------------------------------------------

async function start() {
  Object.assign(S, {
    sessionId: null, resumeToken: null, lastSeq: -1, finals: [], chunks: [], end: 0, sentTo: 0,
    captureTimes: [], ending: false, done: false, attempt: 0, resumes: 0, partials: 0,
  });
  $("finals").textContent = "";
  $("partial").textContent = "";
  $("resumes").textContent = "0";
  $("final-count").textContent = "0";
  $("start").disabled = true;
  setStatus("connecting", "");
  try {
    await startAudio();
  } catch (err) {
    setStatus("error", `microphone unavailable: ${err.message}`);
    $("start").disabled = false;
    return;
  }
  $("stop").disabled = false;
  connect();
}

async function stop() {
  $("stop").disabled = true;
  setStatus("finishing", "committing the last words…");
  await stopAudio();
  S.ending = true;
  pump(); // when disconnected, the resumed connection sends close after the rest
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
document.querySelectorAll(".download").forEach((b) => b.addEventListener("click", () => download(b.dataset.format)));
