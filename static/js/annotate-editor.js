// The embedded Label Studio editor (npm @heartexlabs/label-studio 1.4.0, window.LabelStudio).
//
// Runs inside the annotate page's <iframe> (Label Studio's stylesheet carries antd's global
// reset; the iframe keeps it off the platform). The page's data comes from Django through
// json_script (#editor-data): the label config, the user, the task with the user's OWN
// annotation only (blind), and predictions only where the server allows pre-annotations.
//
// Submit (top-bar button, Ctrl+Enter, or the parent's Submit button) POSTs
// {"image": id, "result": [...]} to /api/annotations/. On success the parent page is told
// (postMessage) and moves on; on an error the server's message is shown here and the boxes
// stay in the editor so nothing is lost.
(function () {
  "use strict";

  const data = JSON.parse(document.getElementById("editor-data").textContent);
  const statusBox = document.getElementById("editor-status");
  const origin = window.location.origin;
  let store = null; // Label Studio's app store, once loaded
  let saving = false;

  function tellParent(type, extra) {
    if (window.parent && window.parent !== window) {
      window.parent.postMessage({ source: "cytoloop-editor", type, image: data.image.id, ...extra }, origin);
    }
  }

  // --- status banner ---------------------------------------------------------------------------

  function showStatus(kind, title, lines) {
    statusBox.className = "editor-status " + kind;
    statusBox.replaceChildren();
    const strong = document.createElement("strong");
    strong.textContent = title;
    statusBox.append(strong);
    if (lines && lines.length) {
      const list = document.createElement("ul");
      for (const line of lines) {
        const item = document.createElement("li");
        item.textContent = line;
        list.append(item);
      }
      statusBox.append(list);
    }
    const close = document.createElement("button");
    close.type = "button";
    close.setAttribute("aria-label", "Close this message");
    close.textContent = "×";
    close.addEventListener("click", hideStatus);
    statusBox.append(close);
    statusBox.dataset.kind = kind;
    statusBox.hidden = false;
  }

  function hideStatus() {
    statusBox.hidden = true;
    delete statusBox.dataset.kind;
  }

  // DRF errors: {"detail": "..."}, {"boxes": ["box 0: ..."]}, {"result": [...]}, {"field": [...]}
  function errorLines(body) {
    if (!body || typeof body !== "object") return [];
    const lines = [];
    const walk = (value, prefix) => {
      if (Array.isArray(value)) value.forEach((v) => walk(v, prefix));
      else if (value && typeof value === "object") {
        Object.entries(value).forEach(([k, v]) => walk(v, k === "detail" || k === "non_field_errors" ? prefix : k));
      } else if (value !== null && value !== undefined) lines.push(prefix ? `${prefix}: ${value}` : String(value));
    };
    walk(body, "");
    return lines;
  }

  // --- saving ----------------------------------------------------------------------------------

  async function save(annotation) {
    if (saving) return;
    saving = true;
    const result = annotation.serializeAnnotation();
    const boxes = result.filter((item) => item.type === "rectanglelabels").length;
    showStatus("saving", `Saving ${boxes} box${boxes === 1 ? "" : "es"}…`);
    tellParent("saving", { boxes });
    let response;
    let body = null;
    try {
      response = await fetch(data.submitUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": data.csrfToken },
        body: JSON.stringify({ image: data.image.id, result }),
      });
      body = await response.json().catch(() => null);
    } catch (err) {
      saving = false;
      const message = "Not saved: the server could not be reached. Your boxes are still here: submit again.";
      showStatus("error", message, [String(err)]);
      tellParent("error", { message });
      return;
    }
    saving = false;
    if (!response.ok) {
      const lines = errorLines(body);
      const message = response.status === 400
        ? "Not saved: fix what is listed below and submit again. Your boxes are still here."
        : response.status === 401 || response.status === 403
          ? `Not saved: the server refused it (${response.status}). Your boxes are still here.`
          : `Not saved (error ${response.status}). Your boxes are still here: submit again.`;
      showStatus("error", message, lines.length ? lines : [response.statusText]);
      tellParent("error", { message, status: response.status, errors: lines });
      return;
    }
    if (typeof annotation.updatePersonalKey === "function" && body && body.id) {
      annotation.updatePersonalKey(String(body.id)); // now it "exists": the top bar offers Update
    }
    const saved = body && Array.isArray(body.boxes) ? body.boxes.length : boxes;
    showStatus("saved", `Saved ${saved} box${saved === 1 ? "" : "es"}.`);
    tellParent("submitted", { annotation: body && body.id, boxes: saved });
  }

  // --- commands from the parent page (its Submit button, hotkeys pressed outside the iframe) ---

  function labelControl() {
    const annotation = store && store.annotationStore.selected;
    return annotation && annotation.names ? annotation.names.get(data.fromName || "cluster") : null;
  }

  function chooseLabel(value) {
    const control = labelControl();
    const label = control && control.children ? control.children.find((c) => c.value === value) : null;
    if (label && typeof label.onHotKey === "function") label.onHotKey();
  }

  // Label Studio ignores a submit while it still holds the previous one (at least 0.5 s, even
  // when the server answered at once): wait for it rather than drop the pathologist's click.
  function requestSubmit(tries = 50) {
    if (store.isSubmitting || saving) {
      if (tries > 0) setTimeout(() => requestSubmit(tries - 1), 100);
      return;
    }
    store.submitAnnotation(); // or update, when the annotation exists (Label Studio decides)
  }

  window.addEventListener("message", (event) => {
    if (event.origin !== origin || event.source !== window.parent || !store) return;
    const message = event.data || {};
    if (message.source !== "cytoloop-annotate") return;
    if (message.type === "submit") requestSubmit();
    else if (message.type === "label") chooseLabel(message.label);
  });

  // --- Label Studio ----------------------------------------------------------------------------

  // Label Studio calls onLabelStudioLoad before it loads the task's annotations and predictions,
  // onStorageInitialized after: the annotation to work on is chosen there. The user's own
  // annotation (re-opened) is selected by Label Studio itself; otherwise a new one is made, from
  // the model's pre-annotation where the server sent one (an editable copy, never the prediction).
  function onStorageInitialized(ls) {
    store = ls;
    const annotations = ls.annotationStore;
    if (!annotations.annotations.length) {
      const prediction = annotations.predictions[0];
      const annotation = prediction
        ? annotations.addAnnotationFromPrediction(prediction)
        : annotations.addAnnotation({ userGenerate: true });
      if (annotation && annotation.id) annotations.selectAnnotation(annotation.id);
    }
    window.cytoloopEditor = { store: ls, save, ready: true };
    document.body.dataset.editor = "ready";
    tellParent("ready");
  }

  // topbar carries the Submit/Update buttons (without it only Ctrl+Enter submits); one
  // annotation per expert, so no "add new annotation" menu.
  const INTERFACES = ["panel", "update", "submit", "controls", "topbar", "side-column"];

  if (typeof window.LabelStudio !== "function") {
    showStatus("error", "The editor's files are missing (static/vendor/label-studio): run `make static`.");
    tellParent("error", { message: "editor files missing" });
    return;
  }

  new window.LabelStudio("root", {
    config: data.config,
    interfaces: INTERFACES.concat(data.task.predictions.length ? ["predictions:menu"] : []),
    user: data.user,
    task: data.task,
    onStorageInitialized,
    onSubmitAnnotation: (ls, annotation) => save(annotation),
    onUpdateAnnotation: (ls, annotation) => save(annotation),
  });
})();
