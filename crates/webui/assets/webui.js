// DockerCoin Miner WebUI.
//
// The webui reads Redis four times a second on its own and keeps five minutes
// of the mining speed. This page listens to /events: first a "history" event
// (the last five minutes and the status now), then an "update" event every
// second with the new status. See crates/webui/src/history.rs for the figures.
"use strict";

const KEEP_SECONDS = 300; // the chart's width in time
const STALE_AFTER = 3; // seconds without news before an entry fades
const GONE_AFTER = 30; // ... and by then it has left the page (the server drops it)

const $ = (id) => document.getElementById(id);
const collator = new Intl.Collator("en", { numeric: true });
const integer = new Intl.NumberFormat("en-US");

// What tests and measurements read: when the chart was first drawn with data.
window.dockercoins = { chartDrawnAt: null, updates: 0 };

// ---- The chart (uPlot) ------------------------------------------------------

let times = [];
let speeds = [];

// The axes' font size comes from the `.axis-labels` rule in webui.css.
function axisFontSize() {
  const probe = document.querySelector(".axis-labels");
  const size = probe ? parseFloat(getComputedStyle(probe).fontSize) : 15;
  return Number.isFinite(size) && size > 0 ? size : 15;
}

function makeChart() {
  const graph = $("graph");
  const px = axisFontSize();
  const font = `${px}px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif`;
  const axis = { font, stroke: "#374151", grid: { stroke: "#e2e6ec", width: 1 }, ticks: { stroke: "#c9cfd8", width: 1 } };
  const options = {
    width: Math.max(graph.clientWidth, 100),
    height: Math.max(graph.clientHeight - 2 * px - 16, 80),
    cursor: { y: false },
    legend: { live: true },
    scales: {
      x: { time: true, range: (u, min, max) => (max == null ? [0, 1] : [max - KEEP_SECONDS, max]) },
      y: { range: (u, min, max) => [0, Math.max(1, (max || 0) * 1.15)] },
    },
    // The legend shows the point under the cursor, or else the latest one.
    series: [
      { value: (u, v, s, i) => clock(i == null ? times[times.length - 1] : v) },
      {
        label: "hashes/second",
        stroke: "#1746c2",
        width: 2,
        fill: "rgba(23, 70, 194, 0.15)",
        points: { show: false },
        value: (u, v, s, i) => {
          const value = i == null ? speeds[speeds.length - 1] : v;
          return value == null ? "–" : value.toFixed(1);
        },
      },
    ],
    axes: [
      {
        ...axis,
        size: 2 * px + 8,
        space: px * 6.5,
        incrs: [1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 1800, 3600],
        values: (u, splits) => splits.map(clock),
      },
      {
        ...axis,
        space: px * 2.5,
        size: (u, values) => {
          // Room for four characters (up to "1000" or "12.5"), so the plot does not move.
          const longest = Math.max(4, ...(values || []).map((v) => String(v).length));
          return Math.ceil(longest * px * 0.62) + px + 10;
        },
      },
    ],
  };
  const chart = new uPlot(options, [times, speeds], graph);
  // Fit the legend inside the box that CSS gave the chart.
  const fit = () => {
    const legend = chart.root.querySelector(".u-legend");
    const legendHeight = legend ? legend.offsetHeight : 0;
    const width = graph.clientWidth;
    const height = Math.max(graph.clientHeight - legendHeight, 80);
    if (width > 0 && (width !== chart.width || height !== chart.height)) {
      chart.setSize({ width, height });
    }
  };
  fit();
  new ResizeObserver(fit).observe(graph);
  chart.fit = fit;
  return chart;
}

const chart = makeChart();
window.dockercoins.chart = chart;

function clock(seconds) {
  if (seconds == null) return "–";
  return new Date(seconds * 1000).toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function draw() {
  chart.setData([times, speeds]);
  chart.fit(); // in case the legend's height changed with its values
  if (window.dockercoins.chartDrawnAt === null && speeds.filter((s) => s != null).length >= 2) {
    window.dockercoins.chartDrawnAt = performance.now();
  }
}

function addPoint(time, speed) {
  if (times.length && time <= times[times.length - 1]) return;
  times.push(time);
  speeds.push(speed);
  while (times.length && times[0] < time - KEEP_SECONDS) {
    times.shift();
    speeds.shift();
  }
}

// ---- The figures --------------------------------------------------------------

function ago(seconds) {
  if (seconds == null) return "–";
  if (seconds < 10) return `${seconds.toFixed(1)} s ago`;
  if (seconds < 120) return `${Math.round(seconds)} s ago`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min ago`;
  return `${Math.floor(seconds / 3600)} h ago`;
}

function render(status) {
  $("speed").textContent = status.speed == null ? "– hashes/second" : `~${status.speed.toFixed(1)} hashes/second`;
  $("hashes").textContent = status.hashes == null ? "–" : integer.format(status.hashes);
  $("coins").textContent = status.coins == null ? "–" : integer.format(status.coins);
  $("last-hash").textContent = ago(status.last_hash_age);
  redisError = status.redis_error;
  showBanner();

  const workerTotal = status.workers.reduce((sum, w) => sum + (w.speed || 0), 0);
  renderList("workers", status.workers, (w) => ({
    figure: w.age > STALE_AFTER ? `stopped · ${ago(w.age)}` : w.speed == null ? "…" : `${w.speed.toFixed(1)} hashes/s`,
    share: workerTotal > 0 ? (w.speed || 0) / workerTotal : 0,
    title: `${integer.format(w.units)} units, ${integer.format(w.coins)} coins since it started`,
  }));
  for (const kind of ["rng", "hasher"]) {
    renderList(kind, status[kind], (i) => ({
      figure: i.age > STALE_AFTER
        ? `silent · ${ago(i.age)}`
        : `${Math.round(i.share * 100)}% · ${i.rate.toFixed(1)}/s`,
      share: i.share,
      title: `${i.rate.toFixed(2)} answers per second to the workers, ${Math.round(i.share * 100)}% of all`,
    }));
  }
}

// Updates a list in place, one <li> per name, in natural order (worker-2
// before worker-10); entries fade as they go silent.
function renderList(id, entries, describe) {
  const list = $(id);
  const rows = new Map();
  for (const li of list.querySelectorAll("li[data-name]")) rows.set(li.dataset.name, li);
  const names = new Set(entries.map((e) => e.name));
  for (const [name, li] of rows) if (!names.has(name)) li.remove();
  const sorted = [...entries].sort((a, b) => collator.compare(a.name, b.name));
  let active = 0;
  sorted.forEach((entry, index) => {
    let li = rows.get(entry.name);
    if (!li) {
      li = document.createElement("li");
      li.dataset.name = entry.name;
      li.innerHTML = '<span class="name"></span><span class="figure"></span><span class="bar"><span></span></span>';
      li.querySelector(".name").textContent = entry.name;
    }
    if (list.children[index] !== li) list.insertBefore(li, list.children[index] || null);
    const { figure, share, title } = describe(entry);
    const stale = entry.age > STALE_AFTER;
    if (!stale) active += 1;
    li.classList.toggle("stale", stale);
    li.style.opacity = stale ? Math.max(0.25, 1 - (entry.age - STALE_AFTER) / (GONE_AFTER - STALE_AFTER)).toFixed(2) : "1";
    li.querySelector(".figure").textContent = figure;
    li.querySelector(".bar > span").style.width = `${(Math.min(1, Math.max(0, share)) * 100).toFixed(1)}%`;
    li.title = title;
  });
  const empty = list.querySelector("li.empty");
  if (empty) empty.hidden = sorted.length > 0;
  $(`${id}-count`).textContent = sorted.length ? `(${active})` : "";
}

// ---- The banner -----------------------------------------------------------------

let redisError = null;
let connected = false;

function showBanner() {
  const banner = $("banner");
  if (!connected) {
    banner.textContent = "Lost contact with the web UI server: reconnecting…";
  } else if (redisError) {
    banner.textContent = "Redis is unreachable: the figures are on hold and will resume by themselves when it is back.";
    banner.title = redisError;
  }
  banner.hidden = connected && !redisError;
}

// ---- The live feed ------------------------------------------------------------------

let lostTimer = null;

function listen() {
  const source = new EventSource("events");
  const alive = () => {
    clearTimeout(lostTimer);
    lostTimer = null;
    connected = true;
  };
  source.addEventListener("history", (event) => {
    alive();
    const { series, status } = JSON.parse(event.data);
    times = series.time;
    speeds = series.speed;
    if (status) render(status);
    showBanner();
    draw();
  });
  source.addEventListener("update", (event) => {
    alive();
    const status = JSON.parse(event.data);
    addPoint(status.time, status.speed);
    render(status);
    draw();
    window.dockercoins.updates += 1;
  });
  source.addEventListener("error", () => {
    // The browser reconnects by itself; say so if it takes more than a moment.
    if (lostTimer === null) {
      lostTimer = setTimeout(() => {
        connected = false;
        showBanner();
      }, 2500);
    }
    if (source.readyState === EventSource.CLOSED) {
      source.close();
      setTimeout(listen, 2000);
    }
  });
}

connected = true;
listen();
