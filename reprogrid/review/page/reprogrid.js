/* reprogrid.js: the interactive grid of a job's report (written by reprogrid report,
 * served live by reprogrid serve). Vanilla JavaScript, nothing fetched from the network.
 *
 * The data arrive as scripts in data/ that push records onto window.REPROGRID_DATA:
 * axes.js (the job's axes, loaded by index.html), tiles-NNN.js (chunks of tiles in grid
 * order, loaded on demand by <script> tags, which work from a file on disk where fetch() does
 * not) and calls.js (the pipeline calls, loaded when a tile's details open). A tile's
 * grid index is the sum over the axes of its position times the axis's step, so the
 * tiles of a view (rows x columns, the other axes fixed) are found by arithmetic.
 * Served live (window.REPROGRID_LIVE), the page polls progress.json every 2 s and
 * reloads its chunks when cells finish.
 */
(function () {
  "use strict";
  var queue = window.REPROGRID_DATA || [];
  var meta = null, calls = null, chunks = {}, waiting = {}, loads = 0;
  var state = { rows: null, cols: null, pages: null, fixed: {}, top: 0, left: 0 };
  var picked = [], version = 0, finished = -1, CACHE = 64;

  function take(record) {
    if (record.kind === "axes") meta = record;
    else if (record.kind === "calls") calls = record.calls;
    else if (record.kind === "tiles") chunks[record.chunk] = record;
  }
  queue.forEach(take);
  window.REPROGRID_DATA = { push: take };

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }
  function axis(name) {
    for (var a = 0; a < meta.axes.length; a++) if (meta.axes[a].name === name) return meta.axes[a];
    return null;
  }
  function script(src) {
    return new Promise(function (resolve) {
      var tag = el("script", { src: src + (window.REPROGRID_LIVE ? "?v=" + version : "") });
      tag.onload = tag.onerror = function () { tag.remove(); resolve(); };
      document.head.appendChild(tag);
    });
  }
  function chunkName(n) { return "data/tiles-" + String(n).padStart(3, "0") + ".js"; }
  function loadChunks(numbers) {
    var wanted = numbers.filter(function (n) { return !chunks[n]; });
    var keys = Object.keys(chunks);
    if (keys.length + wanted.length > CACHE) {  // forget chunks this view does not need
      keys.forEach(function (k) { if (numbers.indexOf(+k) < 0) delete chunks[k]; });
    }
    return Promise.all(wanted.map(function (n) {
      if (!waiting[n]) waiting[n] = script(chunkName(n)).then(function () { delete waiting[n]; });
      return waiting[n];
    }));
  }
  function tileAt(index) {
    var chunk = chunks[Math.floor(index / meta.chunk_tiles)];
    if (!chunk) return null;
    var tile = chunk.tiles[index - chunk.first];
    if (tile && tile.i === index) return tile;
    for (var t = 0; t < chunk.tiles.length; t++) if (chunk.tiles[t].i === index) return chunk.tiles[t];
    return null;
  }

  /* The view: which axis goes where, read from and written to the URL's #fragment. */
  function readHash() {
    var params = new URLSearchParams(location.hash.slice(1));
    state.rows = params.has("rows") ? params.get("rows") || null : meta.rows;
    state.cols = params.has("cols") ? params.get("cols") || null : meta.cols;
    state.pages = params.get("pages") || null;
    state.top = +(params.get("top") || 0);
    state.left = +(params.get("left") || 0);
    meta.axes.forEach(function (a) {
      var at = +(params.get("at." + a.name) || 0);
      state.fixed[a.name] = at >= 0 && at < a.labels.length ? at : 0;
    });
    [state.rows, state.cols, state.pages].forEach(function (name, n) {
      if (name && !axis(name)) state[["rows", "cols", "pages"][n]] = null;
    });
  }
  function writeHash() {
    var params = new URLSearchParams();
    params.set("rows", state.rows || "");
    params.set("cols", state.cols || "");
    if (state.pages) params.set("pages", state.pages);
    if (state.top) params.set("top", state.top);
    if (state.left) params.set("left", state.left);
    meta.axes.forEach(function (a) {
      if (state.fixed[a.name]) params.set("at." + a.name, state.fixed[a.name]);
    });
    history.replaceState(null, "", "#" + params.toString());
  }
  function assign(role, name) {
    ["rows", "cols", "pages"].forEach(function (other) {
      if (other !== role && state[other] === name && name) state[other] = null;
    });
    state[role] = name || null;
    state.top = state.left = 0;
  }

  function axisSelect(select, role) {
    select.textContent = "";
    select.appendChild(el("option", { value: "" }, "(none)"));
    meta.axes.forEach(function (a) {
      var option = el("option", { value: a.name }, a.name + " (" + a.labels.length + ")");
      if (state[role] === a.name) option.selected = true;
      select.appendChild(option);
    });
    select.onchange = function () { assign(role, select.value); draw(); };
  }
  function fixedControls() {
    var box = $("fixed");
    box.textContent = "";
    meta.axes.forEach(function (a) {
      if (a.name === state.rows || a.name === state.cols) return;
      var label = el("label", { "class": a.name === state.pages ? "page-axis" : "fixed-axis" });
      label.appendChild(document.createTextNode((a.name === state.pages ? "page: " : "") + a.name + " "));
      var select = el("select", { "data-axis": a.name });
      a.labels.forEach(function (text, n) {
        var option = el("option", { value: n }, text);
        if (state.fixed[a.name] === n) option.selected = true;
        select.appendChild(option);
      });
      select.onchange = function () { state.fixed[a.name] = +select.value; draw(); };
      label.appendChild(select);
      if (a.name === state.pages) {
        [["previous", -1], ["next", 1]].forEach(function (step) {
          var button = el("button", { type: "button", "class": "page-" + step[0] }, step[0]);
          var to = state.fixed[a.name] + step[1];
          button.disabled = to < 0 || to >= a.labels.length;
          button.onclick = function () { state.fixed[a.name] = to; draw(); };
          label.appendChild(button);
        });
        label.appendChild(el("span", { "class": "page-number" },
          " page " + (state.fixed[a.name] + 1) + " of " + a.labels.length));
      }
      box.appendChild(label);
    });
  }

  function view() {
    var rowAxis = axis(state.rows), colAxis = axis(state.cols);
    var base = 0;
    meta.axes.forEach(function (a) {
      if (a !== rowAxis && a !== colAxis) base += state.fixed[a.name] * a.step;
    });
    var rows = rowAxis ? rowAxis.labels : [""], cols = colAxis ? colAxis.labels : [""];
    var width = Math.min(cols.length, meta.chunk_tiles);
    var height = Math.max(1, Math.floor(meta.chunk_tiles / width));
    var top = Math.min(state.top, Math.max(0, rows.length - 1));
    var left = Math.min(state.left, Math.max(0, cols.length - 1));
    return {
      rowAxis: rowAxis, colAxis: colAxis, base: base, rows: rows, cols: cols,
      rowRange: [top, Math.min(top + height, rows.length)],
      colRange: [left, Math.min(left + width, cols.length)], width: width, height: height
    };
  }
  function indexAt(v, row, col) {
    return v.base + (v.rowAxis ? row * v.rowAxis.step : 0) + (v.colAxis ? col * v.colAxis.step : 0);
  }
  function viewNav(v) {
    var nav = $("view-nav");
    nav.textContent = "";
    var cut = v.rowRange[1] - v.rowRange[0] < v.rows.length || v.colRange[1] - v.colRange[0] < v.cols.length;
    if (!cut) return;
    nav.appendChild(el("span", { id: "extent" }, "rows " + (v.rowRange[0] + 1) + "-" + v.rowRange[1] +
      " of " + v.rows.length + ", columns " + (v.colRange[0] + 1) + "-" + v.colRange[1] + " of " + v.cols.length + " "));
    [["up", "top", -v.height, v.rows.length], ["down", "top", v.height, v.rows.length],
     ["left", "left", -v.width, v.cols.length], ["right", "left", v.width, v.cols.length]].forEach(function (m) {
      var to = (m[1] === "top" ? v.rowRange[0] : v.colRange[0]) + m[2];
      var button = el("button", { type: "button", "class": "move-" + m[0] }, m[0]);
      button.disabled = to < 0 || to >= m[3];
      button.onclick = function () { state[m[1]] = to; draw(); };
      nav.appendChild(button);
    });
  }

  function draw() {
    writeHash();
    axisSelect($("rows-axis"), "rows");
    axisSelect($("cols-axis"), "cols");
    axisSelect($("pages-axis"), "pages");
    fixedControls();
    var v = view();
    viewNav(v);
    var needed = {};
    for (var r = v.rowRange[0]; r < v.rowRange[1]; r++) {
      for (var c = v.colRange[0]; c < v.colRange[1]; c++) {
        needed[Math.floor(indexAt(v, r, c) / meta.chunk_tiles)] = true;
      }
    }
    var drawing = ++loads;
    document.body.setAttribute("data-state", "loading");
    loadChunks(Object.keys(needed).map(Number)).then(function () {
      if (drawing !== loads) return;  // a newer view was asked for meanwhile
      table(v);
      document.body.setAttribute("data-chunks", Object.keys(chunks).join(" "));
      document.body.setAttribute("data-state", "ready");
    });
  }
  function table(v) {
    var grid = $("grid-table");
    grid.textContent = "";
    var head = el("thead"), tr = el("tr");
    tr.appendChild(el("th", { "class": "corner" }, (state.rows || "") + (state.cols ? " \\ " + state.cols : "")));
    for (var c = v.colRange[0]; c < v.colRange[1]; c++) tr.appendChild(el("th", { "class": "col-label" }, v.cols[c]));
    head.appendChild(tr);
    grid.appendChild(head);
    var body = el("tbody");
    if (meta.parent && v.rowRange[0] === 0) {
      var parentRow = el("tr", { "class": "parent-row" });
      parentRow.appendChild(el("th", { "class": "row-label" }, meta.parent_label));
      var at = v.colAxis && v.colAxis.parent !== null ? v.colAxis.parent : 0;
      for (c = v.colRange[0]; c < v.colRange[1]; c++) {
        var cell = el("td");
        if (c === at) fill(cell, meta.parent);
        parentRow.appendChild(cell);
      }
      body.appendChild(parentRow);
    }
    for (var r = v.rowRange[0]; r < v.rowRange[1]; r++) {
      var row = el("tr");
      row.appendChild(el("th", { "class": "row-label" }, v.rows[r]));
      for (c = v.colRange[0]; c < v.colRange[1]; c++) {
        var td = el("td");
        var tile = tileAt(indexAt(v, r, c));
        if (tile) fill(td, tile);
        row.appendChild(td);
      }
      body.appendChild(row);
    }
    grid.appendChild(body);
  }

  function name(tile) { return tile.image ? "image " + tile.image : "cell " + tile.cell; }
  function fill(td, tile) {
    td.className = "tile" + (tile.image ? " has-image" : "") + " status-" + tile.status;
    td.tile = tile;
    if (picked.some(function (p) { return p === tile; })) td.classList.add("picked");
    if (tile.src) {
      var image = el("img", { src: tile.src, alt: tile.alt, title: tile.alt, "class": "thumb" });
      image.onclick = function () { zoom(tile); };
      td.appendChild(image);
    } else {
      var blank = el("div", { "class": "blank", title: tile.error || tile.missing }, tile.missing);
      if (tile.error) blank.appendChild(el("span", { "class": "error" }, tile.error));
      td.appendChild(blank);
    }
    var bar = el("div", { "class": "bar" });
    bar.appendChild(el("span", { "class": "name" }, name(tile)));
    if (tile.verdict) bar.appendChild(el("span", { "class": "verdict " + tile.verdict }, tile.verdict));
    if (tile.nsfw) bar.appendChild(el("span", { "class": "nsfw" }, "nsfw"));
    var info = el("button", { type: "button", "class": "info", title: "recipe, call and hashes" }, "details");
    info.onclick = function () { details(tile); };
    var pick = el("button", { type: "button", "class": "pick", title: "compare two tiles" }, "compare");
    pick.onclick = function () { choose(tile); };
    bar.appendChild(info);
    bar.appendChild(pick);
    td.appendChild(bar);
  }

  function zoom(tile) {
    $("zoom-image").src = tile.href;
    $("zoom-image").alt = tile.alt;
    $("zoom-caption").textContent = name(tile) + ": " + tile.alt + " (" + tile.w + "x" + tile.h + ")";
    $("zoom").hidden = false;
  }
  function details(tile) {
    $("details-title").textContent = name(tile);
    var fields = $("details-fields");
    fields.textContent = "";
    ["status", "pixel_sha256", "png_sha256", "recipe_sha256", "checkpoint_sha256", "verdict", "call_id",
     "environment_id", "device", "nsfw", "truncated", "error", "href"].forEach(function (key) {
      if (tile[key] === undefined || tile[key] === null || tile[key] === false) return;
      var tr = el("tr", { "data-field": key });
      tr.appendChild(el("th", {}, key === "verdict" ? "latest verdict" : key === "href" ? "image" : key));
      tr.appendChild(el("td", {}, String(tile[key])));
      fields.appendChild(tr);
    });
    $("details-recipe").textContent = "{\n" + tile.recipe.map(function (f) {
      return " " + JSON.stringify(f[0]) + ": " + f[1];
    }).join(",\n") + "\n}";
    $("details-call").textContent = tile.call_id ? "loading..." : "no recorded call";
    $("details").hidden = false;
    if (tile.call_id) {
      var show = function () {
        $("details-call").textContent = calls && calls[tile.call_id] ? calls[tile.call_id] : "not found";
      };
      if (calls) show(); else script("data/calls.js").then(show);
    }
  }
  function choose(tile) {
    var at = picked.indexOf(tile);
    if (at >= 0) picked.splice(at, 1); else picked.push(tile);
    if (picked.length > 2) picked.shift();
    document.querySelectorAll("#grid-table td.tile").forEach(function (td) {
      td.classList.toggle("picked", picked.indexOf(td.tile) >= 0);
    });
    $("picked").textContent = picked.length === 1 ? name(picked[0]) + " picked: pick another to compare" : "";
    if (picked.length === 2) compare(picked[0], picked[1]);
  }
  function compare(a, b) {
    var fields = $("compare-fields");
    fields.textContent = "";
    var head = el("tr");
    head.appendChild(el("th"));
    [a, b].forEach(function (tile) {
      var td = el("td");
      if (tile.src) {
        var image = el("img", { src: tile.href, alt: tile.alt });
        image.onclick = function () { zoom(tile); };
        td.appendChild(image);
      } else td.appendChild(el("div", { "class": "blank" }, tile.missing));
      td.appendChild(el("div", {}, name(tile)));
      head.appendChild(td);
    });
    fields.appendChild(head);
    var recipeA = {}, recipeB = {}, keys = [];
    a.recipe.forEach(function (f) { recipeA[f[0]] = f[1]; keys.push(f[0]); });
    b.recipe.forEach(function (f) { recipeB[f[0]] = f[1]; if (keys.indexOf(f[0]) < 0) keys.push(f[0]); });
    var rows = keys.map(function (key) { return [key, recipeA[key], recipeB[key], true]; });
    ["pixel_sha256", "png_sha256", "recipe_sha256", "verdict", "status"].forEach(function (key) {
      rows.push([key, a[key], b[key], false]);
    });
    rows.forEach(function (f) {
      var differs = f[1] !== f[2];
      var tr = el("tr", { "data-field": f[0], "class": (differs ? "differs" : "same") + (f[3] ? " recipe" : "") });
      tr.appendChild(el("th", {}, f[0]));
      tr.appendChild(el("td", {}, f[1] === undefined ? "" : String(f[1])));
      tr.appendChild(el("td", {}, f[2] === undefined ? "" : String(f[2])));
      fields.appendChild(tr);
    });
    $("compare").hidden = false;
  }

  function poll() {
    fetch("progress.json", { cache: "no-store" }).then(function (r) { return r.json(); }).then(function (p) {
      var box = $("progress");
      box.hidden = false;
      box.textContent = "job " + p.status + ": " + p.done + "/" + p.cells + " done" +
        (p.failed ? ", " + p.failed + " failed" : "") + (p.running ? ", " + p.running + " running" : "");
      box.setAttribute("data-done", p.done);
      box.setAttribute("data-cells", p.cells);
      var now = p.done + p.failed + p.cancelled;
      if (finished >= 0 && now !== finished) {  // cells finished: read the tiles again
        version += 1;
        chunks = {};
        draw();
      }
      finished = now;
    }).catch(function () { $("progress").textContent = "the server does not answer"; })
      .then(function () { setTimeout(poll, 2000); });
  }

  function start() {
    if (!meta) {
      $("grid-table").textContent = "data/axes.js did not load: keep data/ next to index.html";
      return;
    }
    readHash();
    var size = $("tile-size");
    size.value = meta.thumb;
    document.body.style.setProperty("--tile", meta.thumb + "px");
    size.oninput = function () { document.body.style.setProperty("--tile", size.value + "px"); };
    $("zoom").onclick = function () { $("zoom").hidden = true; };
    document.querySelectorAll(".panel .shut").forEach(function (button) {
      button.onclick = function () { button.parentNode.hidden = true; };
    });
    document.addEventListener("keydown", function (e) {
      if (e.key === "Escape") {
        $("zoom").hidden = true;
        $("details").hidden = true;
        $("compare").hidden = true;
      }
    });
    draw();
    if (window.REPROGRID_LIVE) poll();
  }
  start();
})();
