/*
 * expd console — client-side helpers for the server-rendered console pages.
 * Plain ES2020, no build step, no network access; needs vendor/uPlot.iife.min.js
 * (global `uPlot`) loaded before it, and vendor/uPlot.min.css for the legend.
 *
 * 1. Timeline charts. On DOMContentLoaded, if the page contains
 *      <script type="application/json" id="timeline-data">…</script>
 *    it draws:
 *      - into div#lift-chart: per treatment, its lift over time (line) with a
 *        filled band between lower and upper bounds, plus a dashed gray zero line;
 *      - into div#exposure-chart: exposed units over time, one line per variant.
 *    Data format (every array is aligned with `times`; values may be null where
 *    not computed yet):
 *      {"metric": "add_to_cart_rate",
 *       "relative": true,                 // lift values are fractions -> axis in %
 *       "times": [1764000000, 1764003600], // unix seconds
 *       "treatments": [{"variant": "treatment",
 *                       "lift": [0.02, 0.025],
 *                       "lower": [-0.01, 0.005],
 *                       "upper": [0.05, 0.045]}],
 *       "exposures": [{"variant": "control",   "units": [100, 210]},
 *                     {"variant": "treatment", "units": [98, 205]}]}
 *    Colour i of PALETTE is used for treatment i (lift chart) and for variant i
 *    (exposure chart, so control is PALETTE[0]); bands use it at alpha 0.2.
 *    With no `times`, the chart divs get the text "No exposures yet".
 *
 * 2. Confirmations. Submitting any <form data-confirm="question"> first asks
 *    confirm(question) and is cancelled if the user declines.
 */
(() => {
  "use strict";

  const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c"];
  const HEIGHT = 260;
  const FALLBACK_WIDTH = 720;
  const NO_LEGEND = "cx-no-legend";

  const colour = (i) => PALETTE[i % PALETTE.length];

  function rgba(hex, alpha) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
  }

  // Align an array to `len` entries, turning anything that is not a finite number into null.
  function column(values, len) {
    const out = new Array(len);
    for (let i = 0; i < len; i++) {
      const v = values ? values[i] : null;
      out[i] = typeof v === "number" && Number.isFinite(v) ? v : null;
    }
    return out;
  }

  // Number of decimals needed to show a step of `incr` (in percent units) distinctly.
  function decimalsFor(incr) {
    if (!(incr > 0)) return 0;
    return Math.min(4, Math.max(0, -Math.floor(Math.log10(incr) + 1e-9)));
  }

  function pct(v, decimals) {
    if (v == null) return "—";
    const p = v * 100;
    const d = decimals == null ? (Math.abs(p) >= 10 ? 1 : 2) : decimals;
    return p.toFixed(d) + "%";
  }

  function num(v) {
    if (v == null) return "—";
    return Number.isInteger(v) ? v.toLocaleString() : v.toLocaleString(undefined, { maximumFractionDigits: 4 });
  }

  // Integer-only tick increments for counts (no "99.5 units").
  const INT_INCRS = [];
  for (let m = 1; m <= 1e12; m *= 10) INT_INCRS.push(m, 2 * m, 5 * m);

  // Legend marker filled with the series colour (uPlot defaults to the series fill, none here).
  const legendMarkers = { fill: (u, i) => u.series[i]._cxColour || "transparent" };

  // Both charts share one time axis: hovering one moves the cursor on the other.
  const SYNC_KEY = "expd-timeline";

  function chartWidth(el) {
    const w = Math.floor(el.clientWidth || el.getBoundingClientRect().width || 0);
    return w > 0 ? w : FALLBACK_WIDTH;
  }

  // A single time point gives a zero-width x range (uPlot would then stretch it by
  // 86400/ms = 1000 days for unix seconds); show one hour either side instead.
  function xRange(u, min, max) {
    const xs = u.data[0];
    if (xs && xs.length === 1 && xs[0] != null) return [xs[0] - 3600, xs[0] + 3600];
    if (min == null) return [null, null];
    return min === max ? [min - 3600, max + 3600] : [min, max];
  }

  function lineSeries(label, stroke, valueFmt, n) {
    return {
      label,
      stroke,
      width: 2,
      spanGaps: false,
      value: (u, v) => valueFmt(v),
      // Points always drawn (a lone point has no line segment), larger when there is only one.
      points: { show: true, size: n === 1 ? 12 : 5, stroke, fill: stroke },
      _cxColour: stroke,
    };
  }

  function hiddenSeries(label, extra) {
    return Object.assign(
      { label, class: NO_LEGEND, stroke: "rgba(0,0,0,0)", width: 0, points: { show: false } },
      extra
    );
  }

  // Remove legend rows of helper series (bounds, zero line) that are not meant to be read.
  function hideHelperLegendRows(u) {
    u.root.querySelectorAll(`.u-legend tr.${NO_LEGEND}`).forEach((tr) => {
      tr.style.display = "none";
    });
  }

  // With a single time point there are no line segments: uPlot draws neither the
  // bands nor the zero line, so draw each interval as a short bar, a tick at the lift
  // value, and the zero line by hand.
  function singlePointOverlay(bars) {
    return (u) => {
      if (u.data[0].length !== 1) return;
      const ctx = u.ctx;
      const dpr = window.devicePixelRatio || 1;
      const x = u.valToPos(u.data[0][0], "x", true);
      const half = 8 * dpr;
      ctx.save();
      const y0 = u.valToPos(0, "y", true);
      ctx.strokeStyle = "#9ca3af";
      ctx.lineWidth = dpr;
      ctx.setLineDash([6 * dpr, 4 * dpr]);
      ctx.beginPath();
      ctx.moveTo(u.bbox.left, Math.round(y0) + 0.5);
      ctx.lineTo(u.bbox.left + u.bbox.width, Math.round(y0) + 0.5);
      ctx.stroke();
      ctx.setLineDash([]);
      for (const { lowerIdx, upperIdx, liftIdx, fill, stroke } of bars) {
        if (!u.series[liftIdx].show) continue;
        const lo = u.data[lowerIdx][0];
        const hi = u.data[upperIdx][0];
        if (lo != null && hi != null) {
          const y1 = u.valToPos(hi, "y", true);
          const y2 = u.valToPos(lo, "y", true);
          ctx.fillStyle = fill;
          ctx.fillRect(x - half, Math.min(y1, y2), 2 * half, Math.max(1, Math.abs(y2 - y1)));
        }
        const v = u.data[liftIdx][0];
        if (v != null) {
          ctx.fillStyle = stroke;
          ctx.fillRect(x - 3 * half, u.valToPos(v, "y", true) - dpr, 6 * half, 2 * dpr);
        }
      }
      ctx.restore();
    };
  }

  function liftChart(el, data) {
    const times = data.times;
    const n = times.length;
    const relative = data.relative === true;
    const fmt = relative ? (v) => pct(v) : (v) => num(v);

    const series = [{}];
    const columns = [times.slice()];
    const bands = [];
    const bars = [];

    (data.treatments || []).forEach((t, i) => {
      const c = colour(i);
      const fill = rgba(c, 0.2);
      const name = String(t.variant ?? `treatment ${i + 1}`);
      const liftIdx = series.length;
      // Legend shows "lift [lower, upper]" for the hovered time.
      const liftFmt = (u, v, si, di) => {
        if (v == null || di == null) return fmt(v);
        const lo = u.data[liftIdx + 1][di];
        const hi = u.data[liftIdx + 2][di];
        return lo == null || hi == null ? fmt(v) : `${fmt(v)} [${fmt(lo)}, ${fmt(hi)}]`;
      };
      series.push(Object.assign(lineSeries(name, c, fmt, n), { value: liftFmt }));
      columns.push(column(t.lift, n));
      const lowerIdx = series.length;
      series.push(hiddenSeries(`${name} lower`, { value: (u, v) => fmt(v) }));
      columns.push(column(t.lower, n));
      const upperIdx = series.length;
      series.push(hiddenSeries(`${name} upper`, { value: (u, v) => fmt(v) }));
      columns.push(column(t.upper, n));
      bands.push({ series: [upperIdx, lowerIdx], fill });
      bars.push({ lowerIdx, upperIdx, liftIdx, fill, stroke: c });
    });

    // Horizontal zero line (also keeps 0 inside the y range).
    series.push(hiddenSeries("zero", { stroke: "#9ca3af", width: 1, dash: [6, 4] }));
    columns.push(new Array(n).fill(0));

    const yValues = relative
      ? (u, splits, axisIdx, space, incr) => {
          const d = decimalsFor(incr * 100);
          return splits.map((v) => (v == null ? "" : pct(v, d)));
        }
      : undefined;

    const opts = {
      width: chartWidth(el),
      height: HEIGHT,
      scales: { x: { time: true, range: xRange } },
      series,
      bands,
      axes: [{}, Object.assign({ size: 60, label: relative ? "lift" : "lift (abs.)" }, yValues ? { values: yValues } : {})],
      legend: { live: true, markers: legendMarkers },
      cursor: { sync: { key: SYNC_KEY } },
      hooks: { draw: [singlePointOverlay(bars)] },
    };
    const u = new uPlot(opts, columns, el);
    hideHelperLegendRows(u);
    return u;
  }

  function exposureChart(el, data) {
    const times = data.times;
    const n = times.length;
    const series = [{}];
    const columns = [times.slice()];
    (data.exposures || []).forEach((e, i) => {
      series.push(lineSeries(String(e.variant ?? `variant ${i + 1}`), colour(i), num, n));
      columns.push(column(e.units, n));
    });
    const opts = {
      width: chartWidth(el),
      height: HEIGHT,
      scales: { x: { time: true, range: xRange } },
      series,
      axes: [{}, { size: 60, label: "exposed units", incrs: INT_INCRS }],
      legend: { live: true, markers: legendMarkers },
      cursor: { sync: { key: SYNC_KEY } },
    };
    return new uPlot(opts, columns, el);
  }

  function message(el, text) {
    el.textContent = "";
    const p = document.createElement("p");
    p.className = "chart-empty";
    p.textContent = text;
    el.appendChild(p);
  }

  function initCharts() {
    const src = document.getElementById("timeline-data");
    if (!src) return;
    const targets = [
      [document.getElementById("lift-chart"), liftChart],
      [document.getElementById("exposure-chart"), exposureChart],
    ].filter(([el]) => el);
    if (targets.length === 0) return;

    let data;
    try {
      data = JSON.parse(src.textContent || "null");
    } catch (err) {
      console.error("timeline-data is not valid JSON", err);
      targets.forEach(([el]) => message(el, "Chart data could not be read"));
      return;
    }
    if (!data || !Array.isArray(data.times) || data.times.length === 0) {
      targets.forEach(([el]) => message(el, "No exposures yet"));
      return;
    }
    if (typeof uPlot !== "function") {
      console.error("uPlot is not loaded");
      targets.forEach(([el]) => message(el, "Charts unavailable"));
      return;
    }

    const charts = [];
    for (const [el, draw] of targets) {
      el.textContent = "";
      try {
        charts.push([el, draw(el, data)]);
      } catch (err) {
        console.error("chart failed", el.id, err);
        message(el, "Chart could not be drawn");
      }
    }

    let pending = false;
    window.addEventListener("resize", () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        for (const [el, u] of charts) {
          const width = chartWidth(el);
          if (width !== u.width) u.setSize({ width, height: HEIGHT });
        }
      });
    });
  }

  function initConfirms() {
    document.addEventListener(
      "submit",
      (ev) => {
        const form = ev.target;
        if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-confirm")) return;
        if (!window.confirm(form.dataset.confirm)) {
          ev.preventDefault();
          ev.stopImmediatePropagation();
        }
      },
      true
    );
  }

  function init() {
    initConfirms();
    initCharts();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
