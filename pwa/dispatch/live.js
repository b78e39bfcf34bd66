// Live updates: the server's Server-Sent Events read with fetch (EventSource cannot send the
// token). Reconnects after a drop; every event goes to `onEvent(name, data)`.

export function connectLive(headers, onEvent, onState) {
  let stopped = false;
  let controller = null;
  async function run() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const response = await fetch("/api/dispatch/live", { headers: headers(), signal: controller.signal });
        if (!response.ok || !response.body) throw new Error(`live ${response.status}`);
        onState(true);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          // SSE lines may end in CRLF (Litestar's do): one line ending from here on.
          buffer = (buffer + value).replace(/\r\n/g, "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let name = "message";
            const data = [];
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) name = line.slice(6).trim();
              else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
            }
            if (data.length) onEvent(name, data.join("\n"));
          }
        }
      } catch (error) {
        if (stopped) return;
      }
      onState(false);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
  run();
  return () => {
    stopped = true;
    controller?.abort();
  };
}
