// The annotate page around the embedded editor (templates/annotation/annotate.html).
//
// Talks to the editor <iframe> (static/js/annotate-editor.js) with postMessage, same origin only:
// the side panel's Submit button and the hotkeys 1..6 / Ctrl+Enter pressed outside the iframe are
// passed to the editor; when the editor reports a successful submit, the page asks the server for
// the next image of the queue (a POST: it claims the image) and follows its redirect.
// The page is never served from the browser cache (Cache-Control: no-store); one restored from
// the back/forward cache is fetched again, so Back never shows an out-of-date editor.
(function () {
  "use strict";

  window.addEventListener("pageshow", (event) => {
    if (event.persisted) window.location.reload();
  });

  const frame = document.getElementById("editor");
  const submitButton = document.getElementById("submit-annotation");
  const state = document.getElementById("annotate-state");
  const nextForm = document.getElementById("next-form");
  const origin = window.location.origin;
  const labels = {};
  document.querySelectorAll("#classes [data-hotkey]").forEach((row) => {
    labels[row.dataset.hotkey] = row.dataset.label;
  });

  function send(type, extra) {
    frame.contentWindow.postMessage({ source: "cytoloop-annotate", type, ...extra }, origin);
  }

  function say(text, isError) {
    state.textContent = text;
    state.title = text; // the bar may cut a long message short
    state.classList.toggle("error", Boolean(isError));
    state.classList.toggle("muted", !isError);
  }

  window.addEventListener("message", (event) => {
    if (event.origin !== origin || event.source !== frame.contentWindow) return;
    const message = event.data || {};
    if (message.source !== "cytoloop-editor") return;
    if (message.type === "ready") {
      submitButton.disabled = false;
      submitButton.textContent = message.submitted ? "Update" : "Submit";
      say(message.notice || (message.submitted
        ? "Your saved boxes are shown: change them and press Update."
        : "Choose a class (1–6), then drag a box around each cluster. Submit when done."));
      frame.contentWindow.focus();
    } else if (message.type === "draft-saved") {
      say(`Draft kept (${message.boxes} box${message.boxes === 1 ? "" : "es"}): not submitted yet.`);
    } else if (message.type === "confirm-empty") {
      say("No box drawn: confirm in the editor that there is no abnormal cluster, or keep annotating.");
    } else if (message.type === "stale") {
      submitButton.disabled = true;
      say(message.message, true);
    } else if (message.type === "saving") {
      submitButton.disabled = true;
      say(`Saving ${message.boxes} box${message.boxes === 1 ? "" : "es"}…`);
    } else if (message.type === "error") {
      submitButton.disabled = false;
      say(message.message || "Not saved.", true);
    } else if (message.type === "submitted") {
      say(`Saved ${message.boxes} box${message.boxes === 1 ? "" : "es"}. Opening your next image…`);
      nextForm.submit();
    }
  });

  submitButton.addEventListener("click", () => send("submit"));
  document.querySelectorAll("#classes [data-label]").forEach((chip) => {
    chip.addEventListener("click", () => {
      send("label", { label: chip.dataset.label });
      frame.contentWindow.focus();
    });
  });

  // keys pressed while the focus is on the page (not in the editor) still reach the editor
  document.addEventListener("keydown", (event) => {
    if (event.target.closest && event.target.closest("input, textarea, select, [contenteditable]")) return;
    const plain = !event.ctrlKey && !event.altKey && !event.metaKey;
    if (plain && labels[event.key]) {
      event.preventDefault();
      send("label", { label: labels[event.key] });
      frame.contentWindow.focus();
    } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !submitButton.disabled) {
      event.preventDefault();
      send("submit");
    }
  });
})();
