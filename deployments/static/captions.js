// Transcript downloads from the finals (pure functions; app.js wires them to the buttons).
"use strict";

function stamp(seconds, sep) {
  const ms = Math.max(0, Math.round(seconds * 1000));
  const pad = (n, w) => String(n).padStart(w, "0");
  const h = Math.floor(ms / 3600000), m = Math.floor(ms / 60000) % 60, s = Math.floor(ms / 1000) % 60;
  return `${pad(h, 2)}:${pad(m, 2)}:${pad(s, 2)}${sep}${pad(ms % 1000, 3)}`;
}

const Captions = {
  txt: (finals) => finals.map((f) => f.text).join(" ").trim() + "\n",
  json: (finals, sessionId) => JSON.stringify({ session_id: sessionId, finals }, null, 2) + "\n",
  srt: (finals) =>
    finals.map((f, i) => `${i + 1}\n${stamp(f.start, ",")} --> ${stamp(f.end, ",")}\n${f.text}\n`).join("\n"),
  vtt: (finals) =>
    "WEBVTT\n\n" + finals.map((f) => `${stamp(f.start, ".")} --> ${stamp(f.end, ".")}\n${f.text}\n`).join("\n"),
  types: { txt: "text/plain", json: "application/json", srt: "application/x-subrip", vtt: "text/vtt" },
};
