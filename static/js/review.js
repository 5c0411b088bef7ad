// Review page (templates/review/cluster.html): keys 1..6 decide the grade; the white box in the
// close-up can be dragged (move) and resized by its corners, filling the numeric inputs, and it
// follows what is typed there. The page works without this file: buttons and inputs are plain forms.
(function () {
  "use strict";

  const labelForm = document.getElementById("label-form");
  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.repeat || !labelForm) return;
    if (ev.target.closest && ev.target.closest("input, textarea, select, [contenteditable]")) return;
    const button = labelForm.querySelector(`button[data-hotkey="${ev.key}"]`);
    if (!button || button.closest("fieldset[disabled]")) return;
    ev.preventDefault();
    labelForm.requestSubmit(button);
  });

  const svg = document.getElementById("closeup");
  const rect = document.getElementById("edit-rect");
  if (!svg || !rect) return;
  const width = Number(svg.dataset.imageWidth);
  const height = Number(svg.dataset.imageHeight);
  const readonly = document.getElementById("edit-box").dataset.readonly === "true";
  const fields = ["x", "y", "width", "height"];
  const inputs = Object.fromEntries(fields.map((k) => [k, document.getElementById("box-" + k)]));
  const handles = svg.querySelectorAll(".handle");
  const MIN = 2;
  let box = read();

  function read() {
    return Object.fromEntries(fields.map((k) => [k, Number(inputs[k].value)]));
  }
  function draw() {
    if (!fields.every((k) => Number.isFinite(box[k]))) return;
    fields.forEach((k) => rect.setAttribute(k, box[k]));
    handles.forEach((h) => {
      const c = h.dataset.corner;
      h.setAttribute("cx", c.includes("w") ? box.x : box.x + box.width);
      h.setAttribute("cy", c.includes("n") ? box.y : box.y + box.height);
    });
  }
  function fill() {
    fields.forEach((k) => { inputs[k].value = box[k].toFixed(1); });
  }
  fields.forEach((k) => inputs[k].addEventListener("input", () => { box = read(); draw(); }));
  draw();
  if (readonly) return;

  const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);
  function point(ev) {
    const p = svg.createSVGPoint();
    p.x = ev.clientX;
    p.y = ev.clientY;
    return p.matrixTransform(svg.getScreenCTM().inverse());
  }
  let drag = null;
  function start(ev, corner) {
    ev.preventDefault();
    ev.stopPropagation();
    drag = { corner, from: point(ev), box: { ...box } };
    svg.setPointerCapture(ev.pointerId);
    svg.classList.add("dragging");
  }
  rect.addEventListener("pointerdown", (ev) => start(ev, null));
  handles.forEach((h) => h.addEventListener("pointerdown", (ev) => start(ev, h.dataset.corner)));
  svg.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const p = point(ev);
    const dx = p.x - drag.from.x;
    const dy = p.y - drag.from.y;
    const b = drag.box;
    if (!drag.corner) {
      box = { ...b, x: clamp(b.x + dx, 0, width - b.width), y: clamp(b.y + dy, 0, height - b.height) };
    } else {
      let x1 = b.x, y1 = b.y, x2 = b.x + b.width, y2 = b.y + b.height;
      if (drag.corner.includes("w")) x1 = clamp(x1 + dx, 0, x2 - MIN); else x2 = clamp(x2 + dx, x1 + MIN, width);
      if (drag.corner.includes("n")) y1 = clamp(y1 + dy, 0, y2 - MIN); else y2 = clamp(y2 + dy, y1 + MIN, height);
      box = { x: x1, y: y1, width: x2 - x1, height: y2 - y1 };
    }
    draw();
    fill();
  });
  const stop = () => { drag = null; svg.classList.remove("dragging"); };
  svg.addEventListener("pointerup", stop);
  svg.addEventListener("pointercancel", stop);
})();
