// The JET page: web circuits (panels) and the operator view.
//
// Plain JavaScript, no build step and nothing fetched from elsewhere. It talks
// JSON frames with the server over one WebSocket (docs/web.md); every name and
// value shown comes from MQTT, so text is always set with textContent, never
// parsed as HTML.
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";

  // -- small DOM helpers -------------------------------------------------------------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    node.append(...children);
    return node;
  }

  function svg(tag, attrs = {}, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    node.append(...children);
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
  }

  function fmt(value) {
    if (typeof value === "number") {
      if (Number.isInteger(value)) return String(value);
      return String(Number(value.toPrecision(6)));
    }
    if (typeof value === "string") return value;
    const text = JSON.stringify(value);
    return text.length > 200 ? text.slice(0, 199) + "…" : text;
  }

  function clock(t) {
    return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
  }

  // -- the connection --------------------------------------------------------------------

  class Connection {
    constructor(onFrame, onState) {
      this.onFrame = onFrame;
      this.onState = onState;
      this.waiting = new Map();
      this.nextRef = 1;
      this.backoff = 500;
      this.open();
    }

    open() {
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const ws = new WebSocket(`${scheme}://${location.host}/ws`);
      this.ws = ws;
      ws.onopen = () => {
        this.backoff = 500;
        this.onState("open");
      };
      ws.onmessage = (event) => {
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch (err) {
          console.error("bad frame from server", err);
          return;
        }
        if (frame.op === "reply") this.settle(frame);
        else this.onFrame(frame);
      };
      ws.onclose = () => {
        for (const { reject } of this.waiting.values()) reject(new Error("connection lost"));
        this.waiting.clear();
        this.onState("closed");
        setTimeout(() => this.open(), this.backoff);
        this.backoff = Math.min(this.backoff * 2, 5000);
      };
    }

    settle(frame) {
      const waiter = this.waiting.get(frame.ref);
      if (!waiter) {
        if (!frame.ok) console.warn("server:", frame.error);
        return;
      }
      this.waiting.delete(frame.ref);
      if (frame.ok) waiter.resolve(frame.result);
      else waiter.reject(new Error(frame.error));
    }

    request(op, fields = {}) {
      if (this.ws.readyState !== WebSocket.OPEN) {
        return Promise.reject(new Error("not connected to the server"));
      }
      const ref = this.nextRef++;
      this.ws.send(JSON.stringify({ op, ref, ...fields }));
      return new Promise((resolve, reject) => this.waiting.set(ref, { resolve, reject }));
    }
  }

  // -- web gadgets ------------------------------------------------------------------------
  //
  // Each widget gets its gadget's description (name, type, params, inputs,
  // outputs) and `emit(port, value)`; the server calls `input(port, value, t)`
  // for values wired in, `history(port, points)` for what a page opened later
  // missed, and `output(port, value)` when any page set an output.

  function caption(gadget) {
    return gadget.params.label || gadget.name;
  }

  // Chart accepts numbers, booleans, [t, value] pairs (jet.lib.TimeSeries) and
  // {t, value} maps; t is in seconds since the epoch.
  function chartPoint(value, t) {
    if (typeof value === "number") return [t, value];
    if (typeof value === "boolean") return [t, value ? 1 : 0];
    if (Array.isArray(value) && value.length === 2 && typeof value[1] === "number") {
      return [typeof value[0] === "number" ? value[0] : t, value[1]];
    }
    if (value && typeof value === "object" && typeof value.value === "number") {
      return [typeof value.t === "number" ? value.t : t, value.value];
    }
    return null;
  }

  class Chart {
    static LIMIT = 500;
    static W = 420;
    static H = 170;
    static PAD = { left: 44, right: 10, top: 10, bottom: 22 };

    constructor(gadget) {
      this.points = [];
      this.line = svg("polyline", { class: "series" });
      this.axes = svg("g", { class: "axes" });
      this.plot = svg(
        "svg",
        { viewBox: `0 0 ${Chart.W} ${Chart.H}`, class: "chart", role: "img" },
        this.axes,
        this.line,
      );
      this.last = el("span", { class: "last", text: "no data yet" });
      this.element = el("div", {}, this.plot, this.last);
      this.gadget = gadget;
      this.draw();
    }

    add(point) {
      if (!point) return;
      this.points.push(point);
      if (this.points.length > Chart.LIMIT) this.points.splice(0, this.points.length - Chart.LIMIT);
    }

    input(_port, value, t) {
      this.add(chartPoint(value, t));
      this.draw();
    }

    history(_port, points) {
      for (const [t, value] of points) this.add(chartPoint(value, t));
      this.draw();
    }

    draw() {
      const { W, H, PAD } = Chart;
      const pts = this.points;
      this.element.dataset.points = String(pts.length);
      this.axes.replaceChildren(
        svg("rect", {
          x: PAD.left, y: PAD.top, width: W - PAD.left - PAD.right,
          height: H - PAD.top - PAD.bottom, class: "frame",
        }),
      );
      if (!pts.length) {
        this.line.setAttribute("points", "");
        return;
      }
      const ts = pts.map((p) => p[0]);
      const vs = pts.map((p) => p[1]);
      let [t0, t1] = [Math.min(...ts), Math.max(...ts)];
      let [v0, v1] = [Math.min(...vs), Math.max(...vs)];
      if (t1 === t0) t1 = t0 + 1;
      if (v1 === v0) [v0, v1] = [v0 - 1, v1 + 1];
      const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
      const y = (v) => H - PAD.bottom - ((v - v0) / (v1 - v0)) * (H - PAD.top - PAD.bottom);
      this.line.setAttribute(
        "points",
        pts.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
      );
      const label = (attrs, text) => svg("text", { class: "tick", ...attrs, text });
      this.axes.append(
        label({ x: PAD.left - 4, y: PAD.top + 8, "text-anchor": "end" }, fmt(v1)),
        label({ x: PAD.left - 4, y: H - PAD.bottom, "text-anchor": "end" }, fmt(v0)),
        label({ x: PAD.left, y: H - 6 }, clock(t0)),
        label({ x: W - PAD.right, y: H - 6, "text-anchor": "end" }, clock(t1)),
      );
      const [t, v] = pts[pts.length - 1];
      this.last.textContent = `${fmt(v)} at ${clock(t)} (${pts.length} points)`;
    }
  }

  class Gauge {
    constructor(gadget) {
      this.min = Number(gadget.params.min ?? 0);
      this.max = Number(gadget.params.max ?? 100);
      if (!(this.max > this.min)) this.max = this.min + 1;
      const arc = (from, to) => {
        const at = (f) => {
          const a = Math.PI * (1 - f);
          return `${(60 + 50 * Math.cos(a)).toFixed(2)} ${(60 - 50 * Math.sin(a)).toFixed(2)}`;
        };
        return `M ${at(from)} A 50 50 0 0 1 ${at(to)}`;
      };
      this.arc = arc;
      this.fill = svg("path", { class: "gauge-fill", d: arc(0, 0.0001) });
      this.reading = svg("text", { x: 60, y: 58, class: "gauge-value", "text-anchor": "middle", text: "–" });
      this.element = svg(
        "svg",
        { viewBox: "0 0 120 72", class: "gauge", role: "img" },
        svg("path", { class: "gauge-track", d: arc(0, 1) }),
        this.fill,
        this.reading,
        svg("text", { x: 10, y: 70, class: "tick", "text-anchor": "middle", text: fmt(this.min) }),
        svg("text", { x: 110, y: 70, class: "tick", "text-anchor": "middle", text: fmt(this.max) }),
      );
    }

    input(_port, value) {
      const v = typeof value === "boolean" ? Number(value) : value;
      if (typeof v !== "number") return;
      const f = Math.min(1, Math.max(0.0001, (v - this.min) / (this.max - this.min)));
      this.fill.setAttribute("d", this.arc(0, f));
      this.reading.textContent = fmt(v);
      this.element.dataset.value = String(v);
    }

    history(port, points) {
      if (points.length) this.input(port, points[points.length - 1][1]);
    }
  }

  class Label {
    constructor() {
      this.element = el("output", { class: "label-value", text: "–" });
    }

    input(_port, value) {
      this.element.textContent = fmt(value);
    }

    history(port, points) {
      if (points.length) this.input(port, points[points.length - 1][1]);
    }
  }

  class Slider {
    constructor(gadget, emit) {
      const p = gadget.params;
      const start = p.value ?? p.min;
      this.range = el("input", {
        type: "range", min: p.min, max: p.max, step: p.step, value: start,
        "aria-label": caption(gadget),
      });
      this.shown = el("output", { class: "slider-value", text: fmt(Number(start)) });
      this.range.addEventListener("input", () => {
        this.shown.textContent = fmt(Number(this.range.value));
      });
      // Sent when the user lets go, not on every step of a drag.
      this.range.addEventListener("change", () => {
        emit("value", Number(this.range.value));
      });
      this.element = el("div", { class: "slider" }, this.range, this.shown);
    }

    output(_port, value) {
      if (typeof value !== "number") return;
      this.range.value = String(value);
      this.shown.textContent = fmt(value);
    }

    enable(on) {
      this.range.disabled = !on;
    }
  }

  class Switch {
    constructor(gadget, emit) {
      this.box = el("input", { type: "checkbox", role: "switch", "aria-label": caption(gadget) });
      this.box.addEventListener("change", () => emit("value", this.box.checked));
      this.element = el("label", { class: "switch" }, this.box, el("span", { class: "knob" }));
    }

    output(_port, value) {
      this.box.checked = Boolean(value);
    }

    enable(on) {
      this.box.disabled = !on;
    }
  }

  class Button {
    constructor(gadget, emit) {
      this.button = el("button", { type: "button", class: "press", text: caption(gadget) });
      this.button.addEventListener("click", () => emit("press", true));
      this.element = this.button;
    }

    output() {
      this.button.classList.add("flash");
      setTimeout(() => this.button.classList.remove("flash"), 300);
    }

    enable(on) {
      this.button.disabled = !on;
    }
  }

  const WIDGETS = {
    "web.Chart": Chart,
    "web.Gauge": Gauge,
    "web.Label": Label,
    "web.Slider": Slider,
    "web.Switch": Switch,
    "web.Button": Button,
  };

  // -- panels: one card per web circuit -------------------------------------------------------

  class Panels {
    constructor(root, conn) {
      this.root = root;
      this.conn = conn;
      this.circuits = new Map(); // id -> {card, widgets: Map(gadget -> widget)}
    }

    clear() {
      this.circuits.clear();
      this.root.replaceChildren();
      this.updateHint();
    }

    updateHint() {
      document.getElementById("no-panels").hidden = this.circuits.size > 0;
    }

    show(circuit) {
      const widgets = new Map();
      const body = el("div", { class: "gadgets" });
      for (const gadget of circuit.gadgets) {
        const Widget = WIDGETS[gadget.type];
        if (!Widget) continue;
        const emit = (port, value) => this.emit(circuit.id, gadget.name, port, value);
        const widget = new Widget(gadget, emit);
        if (widget.enable) widget.enable(circuit.started);
        widgets.set(gadget.name, widget);
        body.append(
          el(
            "figure",
            {
              class: `gadget ${gadget.type.replace(".", "-").toLowerCase()}`,
              "data-gadget": `${circuit.id}.${gadget.name}`,
              "data-type": gadget.type,
            },
            el("figcaption", { text: caption(gadget) }),
            widget.element,
          ),
        );
      }
      const title = el("h2", { text: circuit.id });
      if (circuit.app) title.append(el("small", { text: ` app ${circuit.app}` }));
      if (!circuit.started) title.append(el("small", { class: "warn", text: " not started" }));
      const card = el("section", { class: "card panel", "data-circuit": circuit.id }, title, body);
      const old = this.circuits.get(circuit.id);
      if (old) old.card.replaceWith(card);
      else this.root.append(card);
      this.circuits.set(circuit.id, { card, widgets });
      this.updateHint();
    }

    drop(id) {
      const old = this.circuits.get(id);
      if (old) old.card.remove();
      this.circuits.delete(id);
      this.updateHint();
    }

    widget(frame) {
      return this.circuits.get(frame.circuit)?.widgets.get(frame.gadget);
    }

    emit(circuit, gadget, port, value) {
      this.conn.request("emit", { circuit, gadget, port, value }).catch((err) => {
        const card = this.circuits.get(circuit)?.card;
        if (card) flashError(card, err.message);
      });
    }
  }

  function flashError(card, message) {
    const note = el("p", { class: "error", role: "alert", text: message });
    card.append(note);
    setTimeout(() => note.remove(), 5000);
  }

  // -- operator view --------------------------------------------------------------------------

  const GADGET_W = 150;
  const GAP_X = 60;
  const CIRCUIT_GAP = 90;
  const PORT_DY = 16;

  function portKey(end) {
    return `${end.circuit}|${end.gadget}|${end.port}`;
  }

  // Circuits from sources to sinks along the wires between them (a cycle keeps file order).
  function circuitOrder(circuits, wires) {
    const keys = circuits.map((c) => c.key);
    const incoming = new Map(keys.map((k) => [k, new Set()]));
    for (const w of wires) {
      if (!w.internal && w.src && w.src.circuit !== w.dst.circuit && incoming.has(w.dst.circuit)) {
        incoming.get(w.dst.circuit).add(w.src.circuit);
      }
    }
    const placed = [];
    const done = new Set();
    while (placed.length < keys.length) {
      const ready = keys.filter(
        (k) => !done.has(k) && [...incoming.get(k)].every((s) => done.has(s) || !incoming.has(s)),
      );
      const next = ready.length ? ready : keys.filter((k) => !done.has(k)).slice(0, 1);
      for (const k of next) {
        done.add(k);
        placed.push(k);
      }
    }
    return placed;
  }

  // Layer of each gadget along the wires inside its circuit (bounded: cycles stop growing).
  function gadgetLayers(circuit, wires) {
    const layer = new Map(circuit.gadgets.map((g) => [g.name, 0]));
    const inside = wires.filter((w) => w.internal && w.src.circuit === circuit.key);
    for (let round = 0; round < circuit.gadgets.length; round++) {
      let moved = false;
      for (const w of inside) {
        const want = (layer.get(w.src.gadget) ?? 0) + 1;
        if (layer.has(w.dst.gadget) && layer.get(w.dst.gadget) < want && want < circuit.gadgets.length) {
          layer.set(w.dst.gadget, want);
          moved = true;
        }
      }
      if (!moved) break;
    }
    // A gadget with no wire inside its circuit that feeds other circuits goes
    // to the last column, so its wires leave the circuit without crossing it.
    const last = Math.max(0, ...layer.values());
    const wired = new Set(inside.flatMap((w) => [w.src.gadget, w.dst.gadget]));
    for (const w of wires) {
      if (!w.internal && w.src && w.src.circuit === circuit.key && !wired.has(w.src.gadget)) {
        layer.set(w.src.gadget, last);
      }
    }
    return layer;
  }

  class Graph {
    constructor(root, pick) {
      this.root = root;
      this.pick = pick; // pick(kind, "circuit.gadget.port")
    }

    draw(board, rates) {
      const ports = new Map(); // portKey -> {x, y}
      const layers = [];
      const wiresLayer = svg("g", { class: "wires" });
      const portsLayer = svg("g", { class: "ports" });
      const circuitsById = new Map(board.circuits.map((c) => [c.key, c]));
      let x = 60; // room on the left for wires coming back
      let height = 0;
      const external = new Map(); // topic with no known source -> stub
      for (const w of board.wires) {
        if (!w.internal && !w.src && !external.has(w.topic)) external.set(w.topic, null);
      }
      if (external.size) {
        // Topics that no loaded circuit publishes get a stub on the left.
        const widths = [...external.keys()].map((t) => Math.max(90, t.length * 6.5 + 16));
        const stubW = Math.max(...widths);
        const group = svg("g", { class: "topics" });
        let y = 70;
        for (const topic of external.keys()) {
          group.append(
            svg("rect", { x, y: y - 12, width: stubW, height: 22, rx: 11, class: "topic-stub" }),
            svg("text", { x: x + 8, y: y + 3, class: "port-name", text: topic }),
          );
          external.set(topic, { x: x + stubW, y });
          y += 34;
        }
        layers.push(group);
        height = Math.max(height, y);
        x += stubW + CIRCUIT_GAP;
      }
      for (const key of circuitOrder(board.circuits, board.wires)) {
        const c = circuitsById.get(key);
        const group = svg("g", { class: "circuit", "data-circuit": c.key, "data-state": c.state });
        const layer = gadgetLayers(c, board.wires);
        const columns = new Map();
        for (const g of c.gadgets) {
          const n = layer.get(g.name) ?? 0;
          if (!columns.has(n)) columns.set(n, []);
          columns.get(n).push(g);
        }
        const top = 20;
        const headH = 40;
        let bottom = top + headH + 40;
        const boxes = [];
        const columnCount = Math.max(1, columns.size ? Math.max(...columns.keys()) + 1 : 1);
        for (const [n, column] of columns) {
          let y = top + headH + 10;
          for (const g of column) {
            const rows = Math.max(g.inputs.length, g.outputs.length, 1);
            const h = 30 + rows * PORT_DY;
            boxes.push({ g, x: x + 16 + n * (GADGET_W + GAP_X), y, h });
            y += h + 16;
          }
          bottom = Math.max(bottom, y);
        }
        const width = columnCount * GADGET_W + (columnCount - 1) * GAP_X + 32;
        const rates = c.rates || {};
        group.append(
          svg("rect", { x, y: top, width, height: bottom - top, rx: 10, class: "circuit-box" }),
          svg("circle", { cx: x + 14, cy: top + 15, r: 5, class: `dot ${c.state}` }),
          svg("text", { x: x + 24, y: top + 19, class: "circuit-name", text: `${c.name} (${c.kind})` }),
          svg("text", {
            x: x + 10, y: top + 34, class: "circuit-rates",
            text: `${c.state} · in ${fmt(rates.in ?? 0)}/s · out ${fmt(rates.out ?? 0)}/s`,
          }),
        );
        for (const { g, x: gx, y: gy, h } of boxes) {
          group.append(
            svg("rect", { x: gx, y: gy, width: GADGET_W, height: h, rx: 6, class: "gadget-box" }),
            svg("text", { x: gx + GADGET_W / 2, y: gy + 15, "text-anchor": "middle", class: "gadget-name", text: g.name }),
            svg("text", {
              x: gx + GADGET_W / 2, y: gy + 27, "text-anchor": "middle", class: "gadget-type",
              text: g.type ? g.type.split(".").pop() : `#${g.gid}`,
            }),
          );
          const addPort = (name, index, output) => {
            const py = gy + 40 + index * PORT_DY;
            const px = output ? gx + GADGET_W : gx;
            const target = `${c.name}.${g.name}.${name}`;
            ports.set(portKey({ circuit: c.key, gadget: g.name, port: name }), { x: px, y: py });
            const dot = svg("circle", {
              cx: px, cy: py, r: 5, class: `port ${output ? "out" : "in"}`,
              "data-port": target,
              onclick: () => this.pick(output ? "tap" : "inject", target),
            });
            dot.append(svg("title", { text: `${target} (${output ? "output: click to tap" : "input: click to inject"})` }));
            portsLayer.append(dot); // above the wires, so a wire never hides a port from the mouse
            group.append(
              svg("text", {
                x: output ? px - 8 : px + 8, y: py + 4, "text-anchor": output ? "end" : "start",
                class: "port-name", text: name,
              }),
            );
          };
          g.inputs.forEach((name, i) => addPort(name, i, false));
          g.outputs.forEach((name, i) => addPort(name, i, true));
        }
        layers.push(group);
        x += width + CIRCUIT_GAP;
        height = Math.max(height, bottom);
      }
      let lane = height + 14;
      for (const w of board.wires) {
        const from = w.src ? ports.get(portKey(w.src)) : external.get(w.topic);
        const to = ports.get(portKey(w.dst));
        if (!from || !to) continue;
        let d;
        let mid;
        if (to.x > from.x + 20) {
          const bend = Math.max(40, (to.x - from.x) / 2);
          d = `M ${from.x} ${from.y} C ${from.x + bend} ${from.y}, ${to.x - bend} ${to.y}, ${to.x} ${to.y}`;
          mid = { x: (from.x + to.x) / 2, y: (from.y + to.y) / 2 - 6 };
        } else {
          // A wire going back (right to left) runs in its own lane under the circuits.
          d = `M ${from.x} ${from.y} C ${from.x + 50} ${from.y}, ${from.x + 50} ${lane}, ${from.x} ${lane}`
            + ` L ${to.x} ${lane} C ${to.x - 50} ${lane}, ${to.x - 50} ${to.y}, ${to.x} ${to.y}`;
          mid = { x: (from.x + to.x) / 2, y: lane - 4 };
          lane += 16;
        }
        const path = svg("path", { d, class: w.internal ? "wire internal" : "wire external", "data-topic": w.topic });
        path.append(svg("title", { text: w.topic }));
        wiresLayer.append(path);
        if (!w.internal) {
          const rate = rates.get(w.topic);
          wiresLayer.append(
            svg("text", {
              x: mid.x, y: mid.y, "text-anchor": "middle", class: "rate", "data-topic": w.topic,
              text: rate === undefined ? "…/s" : `${fmt(rate)}/s`,
            }),
          );
        }
      }
      height = lane;
      const width = Math.max(x, 300);
      const picture = svg(
        "svg",
        { viewBox: `0 0 ${width} ${height + 20}`, width, height: height + 20, class: "graph-svg" },
        svg(
          "defs", {},
          svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
            svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" })),
        ),
        ...layers,
        wiresLayer,
        portsLayer,
      );
      if (!board.circuits.length) {
        this.root.replaceChildren(el("p", { class: "hint", text: "No circuit is loaded." }));
      } else {
        this.root.replaceChildren(picture);
      }
    }

    showRates(rates) {
      for (const label of this.root.querySelectorAll("text.rate")) {
        const rate = rates.get(label.dataset.topic);
        label.textContent = rate === undefined ? "…/s" : `${fmt(rate)}/s`;
      }
    }
  }

  class Operator {
    constructor(conn) {
      this.conn = conn;
      this.board = { containers: [], circuits: [], wires: [] };
      this.rates = new Map();
      this.taps = new Map(); // target -> {card, list}
      this.graph = new Graph(document.getElementById("graph"), (kind, target) => this.pick(kind, target));
      document.getElementById("tap-form").addEventListener("submit", (event) => {
        event.preventDefault();
        const input = document.getElementById("tap-target");
        this.tap(input.value.trim());
      });
      document.getElementById("inject-form").addEventListener("submit", (event) => {
        event.preventDefault();
        this.inject();
      });
    }

    pick(kind, target) {
      const input = document.getElementById(kind === "tap" ? "tap-target" : "inject-target");
      input.value = target;
      if (kind === "tap") this.tap(target);
      else document.getElementById("inject-value").focus();
    }

    setBoard(board) {
      this.board = board;
      this.render();
    }

    setRates(rates) {
      this.rates = new Map(Object.entries(rates));
      this.graph.showRates(this.rates);
    }

    render() {
      const body = document.querySelector("#containers tbody");
      body.replaceChildren(
        ...this.board.containers.map((c) => {
          const detail = [c.host && `${c.host} pid ${c.pid}`, c.url, c.pages !== undefined && `${c.pages} page${c.pages === 1 ? "" : "s"}`]
            .filter(Boolean)
            .join(" · ");
          return el(
            "tr", { "data-container": c.name },
            el("td", { text: c.name }),
            el("td", { class: `state ${c.state}`, "data-state": c.state, text: c.state }),
            el("td", { class: "num", text: (c.circuits || []).length }),
            el("td", { class: "detail", text: detail }),
          );
        }),
      );
      const rows = document.querySelector("#circuits tbody");
      rows.replaceChildren(
        ...this.board.circuits.map((c) => {
          const rates = c.rates || {};
          const counters = c.counters || {};
          return el(
            "tr", { "data-circuit": c.key },
            el("td", { text: c.key }),
            el("td", { class: `state ${c.state}`, "data-state": c.state, text: c.state }),
            el("td", { text: c.app || "" }),
            el("td", { class: "num", text: fmt(rates.in ?? 0) }),
            el("td", { class: "num", text: fmt(rates.out ?? 0) }),
            el("td", { class: "num", text: counters.dropped ?? 0 }),
            el("td", { class: "num", text: counters.errors ?? 0 }),
            el("td", { text: c.container || "" }),
          );
        }),
      );
      const options = (output) =>
        this.board.circuits.flatMap((c) =>
          c.gadgets.flatMap((g) =>
            (output ? g.outputs : g.inputs).map((p) => el("option", { value: `${c.name}.${g.name}.${p}` })),
          ),
        );
      document.getElementById("outputs").replaceChildren(...options(true));
      document.getElementById("inputs").replaceChildren(...options(false));
      this.graph.draw(this.board, this.rates);
    }

    // -- taps

    async tap(target) {
      const result = document.getElementById("tap-result");
      if (!target || this.taps.has(target)) return;
      const list = el("ol", { class: "tap-values", reversed: true });
      const close = el("button", { type: "button", class: "close", title: "stop tapping", text: "×" });
      const topic = el("code", { text: "" });
      const card = el(
        "div", { class: "tap", "data-tap": target },
        el("div", { class: "tap-head" }, el("strong", { text: target }), topic, close),
        list,
      );
      this.taps.set(target, { card, list });
      document.getElementById("taps").prepend(card);
      close.addEventListener("click", () => this.untap(target));
      try {
        const answer = await this.conn.request("tap", { target });
        topic.textContent = answer.topic;
        result.textContent = "";
        result.className = "result";
      } catch (err) {
        this.taps.delete(target);
        card.remove();
        result.textContent = err.message;
        result.className = "result error";
      }
    }

    untap(target) {
      const tap = this.taps.get(target);
      if (!tap) return;
      this.taps.delete(target);
      tap.card.remove();
      this.conn.request("untap", { target }).catch(() => {});
    }

    tapValue(frame) {
      const tap = this.taps.get(frame.target);
      if (!tap) return;
      const text = frame.error ? `(${frame.error})` : fmt(frame.value);
      const item = el(
        "li", {},
        el("time", { text: clock(frame.t) }),
        el("span", { class: "topic", text: frame.topic }),
        el("span", { class: frame.error ? "value error" : "value", text }),
      );
      tap.list.prepend(item);
      while (tap.list.children.length > 10) tap.list.lastChild.remove();
    }

    // After a reconnect the server has forgotten this page's taps: ask again.
    reopenTaps() {
      const targets = [...this.taps.keys()];
      for (const target of targets) {
        this.taps.get(target).card.remove();
        this.taps.delete(target);
      }
      for (const target of targets.reverse()) this.tap(target);
    }

    // -- inject

    allowInject(allowed) {
      // Without the operator view the server refuses inject: say so instead of a form.
      for (const id of ["inject-target", "inject-value", "inject-send"]) {
        document.getElementById(id).disabled = !allowed;
      }
      const result = document.getElementById("inject-result");
      if (!allowed) {
        result.textContent = "inject is off: start the web container with --operator";
        result.className = "result";
      } else if (result.textContent.startsWith("inject is off")) {
        result.textContent = "";
      }
    }

    async inject() {
      const target = document.getElementById("inject-target").value.trim();
      const text = document.getElementById("inject-value").value.trim();
      const result = document.getElementById("inject-result");
      let value;
      try {
        value = JSON.parse(text);
      } catch {
        value = text; // a bare word is a string, as `jet inject` reads it
      }
      try {
        await this.conn.request("inject", { target, value });
        result.textContent = `injected ${JSON.stringify(value)} into ${target}`;
        result.className = "result ok";
      } catch (err) {
        result.textContent = err.message;
        result.className = "result error";
      }
    }
  }

  // -- devices: the device registry of `jet devices serve`, by zone ---------------------------

  function age(seconds) {
    const s = Math.max(0, seconds);
    if (s < 120) return `${Math.round(s)}s ago`;
    if (s < 7200) return `${Math.round(s / 60)}m ago`;
    if (s < 172800) return `${Math.round(s / 3600)}h ago`;
    return `${Math.round(s / 86400)}d ago`;
  }

  class Devices {
    constructor() {
      this.note = document.getElementById("devices-note");
      this.root = document.getElementById("zones");
      this.skew = 0; // this browser's clock minus the server's
      this.frame = null;
      // Ages grow by themselves: redrawn every second, without asking the server.
      setInterval(() => this.showAges(), 1000);
    }

    serverNow() {
      return Date.now() / 1000 - this.skew;
    }

    show(frame) {
      this.frame = frame;
      this.skew = Date.now() / 1000 - frame.now;
      const note = this.note;
      note.className = "hint";
      if (!frame.enabled) {
        note.textContent = "The device registry is not shown here: start the web server with"
          + " jet web --devices FILE (the file of jet devices serve --db FILE).";
        this.root.replaceChildren();
        return;
      }
      const count = frame.zones.reduce((n, z) => n + z.devices.length, 0);
      if (frame.error) {
        note.textContent = frame.error;
        note.className = "hint error";
      } else if (!frame.ready) {
        note.textContent = `Reading the device registry ${frame.store}…`;
      } else {
        const zones = frame.zones.length;
        note.textContent = `${count} device${count === 1 ? "" : "s"} in ${zones} zone${zones === 1 ? "" : "s"}`
          + ` (registry ${frame.store})`;
      }
      // (after an error the devices last read stay shown)
      if (frame.error && !count) return;
      this.root.replaceChildren(...frame.zones.map((z) => this.zone(z)));
    }

    zone(z) {
      const online = z.devices.filter((d) => d.online).length;
      const rows = z.devices.map((d) => this.row(d));
      return el(
        "section", { class: "card zone", "data-zone": z.zone },
        el("h2", {}, z.zone || "(no zone)", " ",
          el("small", { text: `${online} of ${z.devices.length} online` })),
        el(
          "table", { class: "devices" },
          el("thead", {}, el(
            "tr", {},
            el("th", { text: "device" }), el("th", { text: "class" }), el("th", { text: "state" }),
            el("th", { text: "last seen" }), el("th", { class: "num", text: "attempts today" }),
            el("th", { class: "num", text: "failures today" }), el("th", { text: "circuit" }),
          )),
          el("tbody", {}, ...rows),
        ),
      );
    }

    row(d) {
      const state = d.online ? "online" : "offline";
      const circuit = d.circuits.length
        ? d.circuits.map((c) => `${d.app}: ${c.name} in ${c.kind} ${c.pack}${c.state === "online" ? "" : ` (${c.state})`}`).join(", ")
        : "–";
      return el(
        "tr", { "data-device": d.uid, "data-state": state },
        el("td", { class: "uid", text: d.uid }),
        el("td", { class: "class", text: d["class"] }),
        el("td", {
          class: `state ${state}`, "data-state": state, text: state,
          title: d.reason ? `${state}: ${d.reason}` : state,
        }),
        el("td", { class: "seen", "data-last-seen": d.last_seen, text: age(this.serverNow() - d.last_seen) }),
        el("td", { class: "num attempts", text: d.today.attempts }),
        el("td", { class: "num failures", text: d.today.failures }),
        el("td", { class: "circuit", "data-app": d.app, text: circuit }),
      );
    }

    showAges() {
      if (document.getElementById("view-devices").hidden) return;
      const now = this.serverNow();
      for (const cell of this.root.querySelectorAll("td.seen")) {
        cell.textContent = age(now - Number(cell.dataset.lastSeen));
      }
    }
  }

  // -- views and wiring ---------------------------------------------------------------------

  const VIEWS = ["panels", "operator", "devices"];

  function showView() {
    const asked = location.hash.slice(1);
    const view = VIEWS.includes(asked) ? asked : "panels";
    for (const name of VIEWS) {
      document.getElementById(`view-${name}`).hidden = name !== view;
      document.getElementById(`tab-${name}`).setAttribute("aria-selected", String(name === view));
    }
  }

  function start() {
    showView();
    window.addEventListener("hashchange", showView);
    const status = document.getElementById("conn");
    let panels;
    let operator;
    let devices;
    let connectedOnce = false;
    const handlers = {
      hello: (f) => {
        document.title = `JET · ${f.server}`;
        operator.allowInject(f.operator === true);
      },
      circuit: (f) => panels.show(f.circuit),
      circuit_gone: (f) => panels.drop(f.id),
      value: (f) => panels.widget(f)?.input?.(f.port, f.value, f.t),
      history: (f) => panels.widget(f)?.history?.(f.port, f.points),
      output: (f) => panels.widget(f)?.output?.(f.port, f.value),
      board: (f) => operator.setBoard(f),
      rates: (f) => operator.setRates(f.rates),
      tap_value: (f) => operator.tapValue(f),
      devices: (f) => devices.show(f),
      dropped: (f) => console.warn(f.error),
    };
    const conn = new Connection(
      (frame) => handlers[frame.op]?.(frame),
      (state) => {
        status.dataset.state = state;
        status.textContent = state === "open" ? "connected" : "disconnected, retrying…";
        if (state === "open") {
          panels.clear(); // the server greets with every circuit again
          if (connectedOnce) operator.reopenTaps();
          connectedOnce = true;
        }
      },
    );
    panels = new Panels(document.getElementById("panels"), conn);
    operator = new Operator(conn);
    devices = new Devices();
    window.jet = { conn, panels, operator, devices }; // for the console and for tests
  }

  document.addEventListener("DOMContentLoaded", start);
})();
