// The results page's charts (uPlot, vendored): traffic share and click rate per variant
// over time, from the timeline the page carries as JSON.
(function () {
  "use strict";
  var source = document.getElementById("timeline-data");
  if (!source || typeof uPlot === "undefined") return;
  var payload = JSON.parse(source.textContent);
  var timeline = payload.timeline;
  var ids = Object.keys(timeline.actions);
  // Distinguishable colours, each at least 3:1 against white.
  var colours = ["#1a4fbf", "#c2410c", "#15803d", "#7e22ce", "#b91c1c", "#0e7490", "#a16207"];
  var draw = function (elementId, key, label) {
    var element = document.getElementById(elementId);
    var series = [{}];
    var data = [timeline.starts];
    ids.forEach(function (id, i) {
      series.push({
        label: payload.labels[id] || id.slice(0, 8),
        stroke: colours[i % colours.length],
        width: 2,
        spanGaps: true,
        points: { show: true, size: 7 },
        value: function (u, v) { return v == null ? "—" : (v * 100).toFixed(1) + "%"; },
      });
      data.push(timeline.actions[id][key]);
    });
    var width = function () { return Math.max(280, element.clientWidth - 16); };
    var plot = new uPlot({
      title: label,
      width: width(),
      height: 220,
      series: series,
      axes: [{}, { values: function (u, vals) { return vals.map(function (v) { return (v * 100).toFixed(0) + "%"; }); } }],
      scales: {
        // Half a bucket either side, so a single bucket is a point in a window, not years.
        // (From the buckets, not uPlot's data range, which it widens to days for one point.)
        x: { time: true, range: function () {
          var half = timeline.bucket_seconds / 2;
          return [timeline.starts[0] - half, timeline.starts[timeline.starts.length - 1] + half];
        } },
        y: { range: [0, 1] },
      },
    }, data, element);
    window.addEventListener("resize", function () { plot.setSize({ width: width(), height: 220 }); });
  };
  draw("chart-share", "share", "Traffic share");
  draw("chart-rate", "rate", "Click rate");
})();
