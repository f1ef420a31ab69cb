// Server-Sent Events read with fetch(), so the request can carry an
// Authorization header (EventSource cannot send one). It parses the stream
// as the HTML standard says (`event:`, `data:`, `id:`, `retry:`, comments
// starting with `:`), and when the stream ends or fails it reconnects after
// a pause with `Last-Event-ID`, so the server resumes after the last event
// seen. A 401 or 403 stops it: the same request would be refused again.
"use strict";

// Opens `path`; `on` maps event types to handlers ({ data, lastEventId }),
// plus `open()` and `error(err)`. `headers()` is read at each connection.
// Returns a function that closes the stream for good.
function openStream(path, headers, on) {
  let lastEventId = "", retry = 3000, stopped = false, controller = null;
  const dispatch = (type, data) => { if (on[type]) on[type]({ data, lastEventId }); };

  // One connection: resolves when the server ends the stream.
  async function read() {
    controller = new AbortController();
    const h = Object.assign({ Accept: "text/event-stream" }, headers());
    if (lastEventId) h["Last-Event-ID"] = lastEventId;
    const response = await fetch(path, { headers: h, cache: "no-store", signal: controller.signal });
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      throw Object.assign(new Error(body?.error?.message || response.status + " " + response.statusText), { status: response.status });
    }
    if (on.open) on.open();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "", type = "", data = [], id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, end).replace(/\r$/, "");
        buffer = buffer.slice(end + 1);
        if (line === "") {
          // A blank line ends an event; one without data is not dispatched.
          if (id !== null) lastEventId = id;
          if (data.length) dispatch(type || "message", data.join("\n"));
          type = ""; data = []; id = null;
          continue;
        }
        if (line.startsWith(":")) continue; // a comment: the heartbeat
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? "" : line.slice(colon + 1);
        if (v.startsWith(" ")) v = v.slice(1);
        if (field === "event") type = v;
        else if (field === "data") data.push(v);
        else if (field === "id" && !v.includes("\0")) id = v;
        else if (field === "retry" && /^\d+$/.test(v)) retry = Number(v);
      }
    }
  }

  (async () => {
    while (!stopped) {
      try {
        await read();
        if (on.error) on.error(new Error("the stream ended"));
      } catch (err) {
        if (stopped) return;
        if (on.error) on.error(err);
        if (err.status === 401 || err.status === 403) return;
      }
      await new Promise((resolve) => setTimeout(resolve, retry));
    }
  })();
  return () => { stopped = true; if (controller) controller.abort(); };
}
