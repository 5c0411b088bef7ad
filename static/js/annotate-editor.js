// The embedded Label Studio editor (npm @heartexlabs/label-studio 1.4.0, window.LabelStudio).
//
// Runs inside the annotate page's <iframe> (Label Studio's stylesheet carries antd's global
// reset; the iframe keeps it off the platform). The page's data comes from Django through
// json_script (#editor-data): the label config, the user, the task with the user's OWN
// annotation only (blind), and predictions only where the server allows pre-annotations.
//
// Submit (the annotate page's one Submit/Update button, or Ctrl+Enter) POSTs
// {"image": id, "result": [...], "revision": N, "no_findings": bool} to /api/annotations/.
// "revision" is the revision of the user's annotation this editor was opened on (0: nothing
// submitted yet): a save from an out-of-date editor (Back, a second tab, another device) gets
// 409, and the page reloads what is saved now and says so. An image with no box asks once
// ("No abnormal cluster on this image?") before it is submitted as a deliberate answer.
// Work in progress is autosaved as a draft (PUT draftUrl, 1 s after the last change and on
// pagehide) and restored when the editor opens again. On success the parent page is told
// (postMessage) and moves on; on an error the server's message is shown here and the boxes
// stay in the editor so nothing is lost.
(function () {
  "use strict";

  const data = JSON.parse(document.getElementById("editor-data").textContent);
  const statusBox = document.getElementById("editor-status");
  const confirmBox = document.getElementById("confirm-empty");
  const origin = window.location.origin;
  const noticeKey = `cytoloop-editor-notice-${data.image.id}`;
  const DRAFT_DELAY_MS = 1000;
  let store = null; // Label Studio's app store, once loaded
  let saving = false;
  let finished = false; // submitted (or reloading): no more drafts from this editor
  let lastDraft = null; // the rectangles (JSON) last kept on the server, as a draft or submitted
  let draftTimer = null;
  let draftSaving = false;

  // A page restored from the back/forward cache would show an out-of-date editor: fetch it again.
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) window.location.reload();
  });

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

  function rectangles(annotation) {
    const target = annotation || (store && store.annotationStore.selected);
    if (!target) return [];
    return target.serializeAnnotation().filter((item) => item.type === "rectanglelabels");
  }

  // what a draft must keep: each box's region id, place and class (Label Studio fills in other
  // fields, such as the image's size, once the image has loaded: that is no change)
  function signature(result) {
    const r = (v) => Math.round(Number(v) * 1000) / 1000;
    return JSON.stringify(result.map((item) => {
      const v = item.value || {};
      return [item.id, r(v.x), r(v.y), r(v.width), r(v.height), v.rectanglelabels];
    }));
  }

  function headers() {
    return { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": data.csrfToken };
  }

  // 409: this editor is out of date. Reload the whole annotate page (it shows what is saved now)
  // and say why once it is back.
  function reloadStale(body) {
    finished = true;
    const message = (body && body.detail) || "This image was saved elsewhere since you opened it; reloaded what is saved now.";
    try {
      window.sessionStorage.setItem(noticeKey, message);
    } catch (err) { /* private mode: the reload still shows what is saved */ }
    tellParent("stale", { message });
    window.top.location.reload();
  }

  // --- drafts: work in progress survives a reload, a crash or coming back later ---------------

  function draftBody(result) {
    return JSON.stringify({ result, revision: data.revision });
  }

  async function saveDraft() {
    draftTimer = null;
    if (finished || saving || !store) return;
    if (draftSaving) {
      scheduleDraft();
      return;
    }
    const result = rectangles();
    const json = signature(result);
    if (json === lastDraft) return;
    draftSaving = true;
    try {
      const response = await fetch(data.draftUrl, {
        method: "PUT", credentials: "same-origin", headers: headers(), body: draftBody(result),
      });
      if (response.ok) {
        lastDraft = json;
        document.body.dataset.draft = "saved";
        tellParent("draft-saved", { boxes: result.length });
      } else if (response.status === 409 && !finished) {
        reloadStale(await response.json().catch(() => null));
      }
    } catch (err) {
      scheduleDraft(5 * DRAFT_DELAY_MS); // offline for a moment: try again later
    } finally {
      draftSaving = false;
    }
  }

  function scheduleDraft(delay = DRAFT_DELAY_MS) {
    if (finished) return;
    clearTimeout(draftTimer);
    draftTimer = setTimeout(saveDraft, delay);
  }

  // Label Studio 1.4.0 has no "annotation changed" callback for moves and resizes: look at the
  // rectangles twice a second and save a draft 1 s after the last change.
  let lastSeen = null;
  function watchChanges() {
    if (finished || !store) return;
    const json = signature(rectangles());
    if (json !== lastSeen) {
      lastSeen = json;
      if (json !== lastDraft) {
        document.body.dataset.draft = "pending";
        scheduleDraft();
      }
    }
  }

  // leaving the page (reload, Back, closing the tab): keep what was drawn since the last draft
  window.addEventListener("pagehide", () => {
    if (finished || !store) return;
    const result = rectangles();
    const json = signature(result);
    if (json === lastDraft) return;
    fetch(data.draftUrl, {
      method: "PUT", credentials: "same-origin", keepalive: true, headers: headers(), body: draftBody(result),
    }).catch(() => {});
  });

  // --- an image with no box: ask once -----------------------------------------------------------

  function askNoFindings(annotation) {
    confirmBox.hidden = false;
    tellParent("confirm-empty");
    const yes = confirmBox.querySelector("[data-answer=yes]");
    const no = confirmBox.querySelector("[data-answer=no]");
    const close = (answer) => {
      confirmBox.hidden = true;
      yes.onclick = null;
      no.onclick = null;
      if (answer) save(annotation, { noFindings: true });
      else tellParent("error", { message: "Not submitted: draw a box around each abnormal cluster, then submit." });
    };
    yes.onclick = () => close(true);
    no.onclick = () => close(false);
    yes.focus();
  }

  // --- saving ----------------------------------------------------------------------------------

  async function save(annotation, { noFindings = false } = {}) {
    if (saving || finished) return;
    const result = annotation.serializeAnnotation();
    const boxes = result.filter((item) => item.type === "rectanglelabels").length;
    if (boxes === 0 && !noFindings) {
      askNoFindings(annotation);
      return;
    }
    saving = true;
    clearTimeout(draftTimer);
    showStatus("saving", boxes ? `Saving ${boxes} box${boxes === 1 ? "" : "es"}…` : "Saving: no abnormal cluster…");
    tellParent("saving", { boxes });
    let response;
    let body = null;
    try {
      response = await fetch(data.submitUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: headers(),
        body: JSON.stringify({ image: data.image.id, result, revision: data.revision, no_findings: boxes === 0 }),
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
    if (response.status === 409) {
      reloadStale(body);
      return;
    }
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
      annotation.updatePersonalKey(String(body.id)); // now it "exists"
    }
    finished = true; // the draft is gone with the submit; leaving the page saves none
    if (body && typeof body.revision === "number") data.revision = body.revision;
    const saved = body && Array.isArray(body.boxes) ? body.boxes.length : boxes;
    showStatus("saved", saved ? `Saved ${saved} box${saved === 1 ? "" : "es"}.` : "Saved: no abnormal cluster.");
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
    reportLabel();
  }

  // Which label a new box gets now (body[data-label], "" for none): set after every label key,
  // whether Label Studio's own hotkeys (focus in the editor) or the page's (chooseLabel) chose it,
  // so the page and the browser tests can wait for the choice instead of racing it.
  function reportLabel() {
    const control = labelControl();
    const chosen = control && control.children ? control.children.find((c) => c.selected) : null;
    document.body.dataset.label = chosen ? chosen.value : "";
  }
  document.addEventListener("keyup", () => setTimeout(reportLabel, 0), true);

  // Label Studio ignores a submit while it still holds the previous one (at least 0.5 s, even
  // when the server answered at once): wait for it rather than drop the pathologist's click.
  function requestSubmit(tries = 50) {
    if (!confirmBox.hidden) return; // the no-cluster question is open: answer it first
    if (store.isSubmitting || saving) {
      if (tries > 0) setTimeout(() => requestSubmit(tries - 1), 100);
      return;
    }
    const annotation = store.annotationStore.selected;
    if (annotation) save(annotation);
  }

  // Ctrl+Enter inside the editor (Label Studio's own submit buttons are not shown: one Submit)
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && store) {
      event.preventDefault();
      event.stopPropagation();
      requestSubmit();
    } else if (event.key === "Escape" && !confirmBox.hidden) {
      confirmBox.querySelector("[data-answer=no]").click();
    }
  }, true);

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
  // A draft (unsaved work) comes in place of the saved boxes when there are some (the server put
  // it into the user's annotation), else it is loaded into a new annotation here.
  function onStorageInitialized(ls) {
    store = ls;
    const annotations = ls.annotationStore;
    if (!annotations.annotations.length) {
      const prediction = data.draft ? null : annotations.predictions[0];
      const annotation = prediction
        ? annotations.addAnnotationFromPrediction(prediction)
        : annotations.addAnnotation({ userGenerate: true });
      if (annotation && annotation.id) annotations.selectAnnotation(annotation.id);
      if (data.draft && annotation) {
        annotation.deserializeResults(data.draft.result);
        annotation.updateObjects();
      }
    }
    if (ls.settings && !ls.settings.showLabels && typeof ls.settings.toggleShowLabels === "function") {
      ls.settings.toggleShowLabels(); // each box shows its class, not only a colour
    }
    // what the server holds now (the draft or the saved boxes) is not a change to save again
    lastDraft = lastSeen = signature(rectangles());
    setInterval(watchChanges, 500);
    let notice = null;
    try {
      notice = window.sessionStorage.getItem(noticeKey);
      window.sessionStorage.removeItem(noticeKey);
    } catch (err) { /* no session storage */ }
    if (notice) showStatus("error", notice);
    else if (data.draft) showStatus("saved", data.draft.note);
    window.cytoloopEditor = { store: ls, save, ready: true, revision: () => data.revision };
    document.body.dataset.editor = "ready";
    tellParent("ready", { submitted: data.submitted, notice: notice || (data.draft && data.draft.note) || "" });
  }

  // One Submit: the annotate page's button (Label Studio's top-bar Submit/Update are not shown);
  // one annotation per expert, so no "add new annotation" menu.
  const INTERFACES = ["panel", "controls", "side-column"];

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
