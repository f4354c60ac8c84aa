// The admin's process health page (templates/admin/health.html): polls the staff-only JSON
// (rtcsite.health.admin_data) and redraws the tables. No inline script: the CSP forbids it.
(function () {
  "use strict";
  const checks = document.getElementById("health-checks");
  const errorNote = document.getElementById("health-error");
  const processes = document.querySelector("#health-processes tbody");
  const errors = document.querySelector("#health-errors tbody");
  const url = checks.dataset.url;
  const interval = Math.max(1, Number(checks.dataset.interval) || 5) * 1000;

  function cell(row, text, title) {
    const td = document.createElement("td");
    td.textContent = text;
    if (title) td.title = title;
    row.appendChild(td);
  }
  function duration(seconds) {
    const s = Math.round(seconds);
    if (s < 120) return s + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  function mib(bytes) {
    return (bytes / 1048576).toFixed(1) + " MiB";
  }
  function checkText(map) {
    return Object.entries(map || {}).map(([name, state]) => name + " " + state).join(", ");
  }
  function context(entry) {
    return ["room", "stream", "peer", "user", "conn"]
      .filter((key) => entry[key])
      .map((key) => key + "=" + entry[key])
      .join(" ");
  }

  function render(data) {
    checks.textContent = "Seen from " + data.served_by + ": " + checkText(data.checks) +
      " · " + data.processes.length + " process(es) · " + new Date(data.now * 1000).toLocaleTimeString();
    errorNote.hidden = !data.error;
    errorNote.textContent = data.error || "";
    processes.replaceChildren();
    const allErrors = [];
    for (const p of data.processes) {
      const row = document.createElement("tr");
      row.dataset.process = p.id;
      cell(row, p.id);
      cell(row, p.role || "-");
      cell(row, duration(p.uptime));
      cell(row, Math.round(p.cpu * 100) + " %");
      cell(row, mib(p.rss));
      cell(row, String(p.rooms));
      const sockets = Object.entries(p.sockets).filter(([, n]) => n > 0);
      cell(row, sockets.map(([kind, n]) => kind + " " + n).join(", ") || "0");
      cell(row, p.server_peers + " (" + p.fps_in + "/" + p.fps_out + ")");
      cell(row, p.streams.map((s) =>
        s.slug + " " + s.state + " pid " + (s.ffmpeg_pid || "-") + ", " +
        Math.round(s.queue_bytes / 1024) + " KiB, " +
        (s.segment_lag === null ? "-" : s.segment_lag + " s")).join("; ") || "none");
      cell(row, checkText(p.checks));
      cell(row, duration(data.now - p.updated_at) + " ago");
      processes.appendChild(row);
      for (const e of p.errors) allErrors.push([p.id, e]);
    }
    allErrors.sort((a, b) => b[1].at - a[1].at);
    errors.replaceChildren();
    for (const [id, e] of allErrors.slice(0, 50)) {
      const row = document.createElement("tr");
      cell(row, new Date(e.at * 1000).toLocaleString());
      cell(row, id);
      cell(row, e.level);
      cell(row, e.logger);
      cell(row, context(e));
      cell(row, e.message);
      errors.appendChild(row);
    }
  }

  async function poll() {
    try {
      const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      render(await response.json());
    } catch (error) {
      errorNote.hidden = false;
      errorNote.textContent = "Health data unavailable (" + error.message + "); retrying.";
    }
    setTimeout(poll, interval);
  }
  poll();
})();
