// Polls /json every second and draws the mining speed between samples.
const samples = [];
const chart = new uPlot(
  { width: Math.min(window.innerWidth - 32, 900), height: 300,
    series: [{}, { label: "hashes/second", stroke: "#2563eb", fill: "rgba(37,99,235,0.15)" }] },
  [[], []], document.getElementById("graph"));

async function refresh() {
  try {
    const response = await fetch("json");
    const sample = await response.json();
    samples.push(sample);
    if (samples.length > 250) samples.shift();
    const times = [], speeds = [];
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1], b = samples[i];
      times.push(b.now);
      speeds.push((b.hashes - a.hashes) / (b.now - a.now));
    }
    chart.setData([times, speeds]);
    if (speeds.length) {
      document.getElementById("speed").textContent = "~" + speeds[speeds.length - 1].toFixed(1) + " hashes/second";
    }
  } catch (e) { /* try again next second */ }
}
setInterval(refresh, 1000);
refresh();
