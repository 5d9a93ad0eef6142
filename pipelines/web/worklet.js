// Runs on the audio thread: the first input channel -> s16le, clamped and rounded, posted in ~100 ms blocks
// (one websocket message each) so the main thread is not woken for every 128-frame render quantum.
class PCMSender extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Int16Array(Math.round(sampleRate / 10));
    this.used = 0;
    this.port.onmessage = (e) => { if (e.data === "flush") { this.send(); this.port.postMessage("flushed"); } };
  }

  send() {
    if (this.used === 0) return;
    const out = this.block.slice(0, this.used);
    this.port.postMessage(out.buffer, [out.buffer]);
    this.used = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      for (let i = 0; i < channel.length; i++) {
        const x = Math.max(-1, Math.min(1, channel[i]));  // clamp: a float past full scale must not wrap
        this.block[this.used++] = Math.max(-32768, Math.min(32767, Math.round(x * 32768)));
        if (this.used === this.block.length) this.send();
      }
    }
    return true;
  }
}
registerProcessor("pcm-sender", PCMSender);
