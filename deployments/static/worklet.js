// AudioWorklet: microphone frames (44.1/48 kHz, any channel count) -> 16 kHz mono int16 chunks.
// Mixes channels down, then a Kaiser-windowed sinc resampler (the same design as the server's
// ingest/audio.py StreamResampler) so nothing above 8 kHz aliases into the speech band.
const TARGET_RATE = 16000;
const CHUNK = 1600; // 100 ms per message to the page
const ZERO_CROSSINGS = 16;
const BETA = 8.6;
const PHASES = 256; // kernel table resolution per input sample

function besselI0(x) {
  let sum = 1, term = 1;
  for (let k = 1; k < 30; k++) {
    term *= (x / (2 * k)) * (x / (2 * k));
    sum += term;
  }
  return sum;
}

class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE;
    this.cutoff = 0.97 * Math.min(1, TARGET_RATE / sampleRate);
    this.half = Math.ceil(ZERO_CROSSINGS / this.cutoff);
    const n = this.half * PHASES + 2;
    this.table = new Float32Array(n);
    for (let j = 0; j < n; j++) {
      const x = j / PHASES;
      const r = Math.min(1, x / this.half);
      const sinc = x === 0 ? 1 : Math.sin(Math.PI * this.cutoff * x) / (Math.PI * this.cutoff * x);
      this.table[j] = (this.cutoff * sinc * besselI0(BETA * Math.sqrt(1 - r * r))) / besselI0(BETA);
    }
    this.buf = new Float32Array(0); // input samples from index this.base on
    this.base = 0;
    this.consumed = 0;
    this.emitted = 0;
    this.out = new Int16Array(CHUNK);
    this.fill = 0;
    this.port.onmessage = (e) => {
      if (e.data === "flush") {
        this.post();
        this.port.postMessage({ flushed: true });
      }
    };
  }

  kernel(x) {
    const a = Math.abs(x) * PHASES;
    const i = a | 0;
    if (i >= this.table.length - 1) return 0;
    const f = a - i;
    return this.table[i] * (1 - f) + this.table[i + 1] * f;
  }

  post() {
    if (this.fill === 0) return;
    const chunk = this.out.slice(0, this.fill);
    this.port.postMessage({ samples: chunk, rate: sampleRate }, [chunk.buffer]);
    this.fill = 0;
  }

  push(mono) {
    const joined = new Float32Array(this.buf.length + mono.length);
    joined.set(this.buf);
    joined.set(mono, this.buf.length);
    this.buf = joined;
    this.consumed += mono.length;
    for (;;) {
      const t = this.emitted * this.step;
      const center = Math.floor(t);
      if (center + this.half >= this.consumed) break; // its right-hand taps have not arrived
      let acc = 0;
      for (let k = center - this.half + 1; k <= center + this.half; k++) {
        const i = k - this.base;
        if (i >= 0) acc += this.buf[i] * this.kernel(t - k);
      }
      this.emitted++;
      this.out[this.fill++] = Math.max(-32768, Math.min(32767, Math.round(acc * 32767)));
      if (this.fill === CHUNK) this.post();
    }
    const keep = Math.floor(this.emitted * this.step) - this.half + 1 - this.base;
    if (keep > 0) {
      this.buf = this.buf.slice(keep);
      this.base += keep;
    }
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length > 0) {
      const mono = new Float32Array(channels[0].length);
      for (const ch of channels) for (let i = 0; i < mono.length; i++) mono[i] += ch[i] / channels.length;
      this.push(mono);
    }
    return true;
  }
}

registerProcessor("rayscribe-capture", Capture);
