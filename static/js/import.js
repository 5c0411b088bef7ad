/* Import page: drag-and-drop onto the file input and the list of chosen files. The upload is htmx's
   (hx-post, hx-encoding multipart, see annotation/import.html): this shows its progress. Without
   this script the form still works: the file input is a normal one and the form posts. */
(function () {
  "use strict";

  var form = document.getElementById("import-form");
  if (!form || !window.DataTransfer) return;

  var zone = document.getElementById("dropzone");
  var input = document.getElementById("id_files");
  var list = document.getElementById("file-list");
  var summary = document.getElementById("file-summary");
  var count = document.getElementById("file-count");
  var clear = document.getElementById("clear-files");
  var bar = document.getElementById("upload-progress");
  var state = document.getElementById("upload-state");
  var bytes = document.getElementById("upload-bytes");
  var existing = document.getElementById("id_dataset");
  var fresh = document.getElementById("id_new_dataset");
  var maxFiles = parseInt(form.dataset.maxFiles || "100", 10);
  var accepted = (input.getAttribute("accept") || "").split(",");

  zone.classList.add("js");

  function human(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KB";
    if (n < 1024 * 1024 * 1024) return (n / 1024 / 1024).toFixed(1) + " MB";
    return (n / 1024 / 1024 / 1024).toFixed(2) + " GB";
  }

  function extension(name) {
    var dot = name.lastIndexOf(".");
    return dot < 0 ? "" : name.slice(dot).toLowerCase();
  }

  function showErrors(messages) {
    var errors = document.getElementById("import-errors");  // htmx replaces it with the server's list
    errors.replaceChildren();
    messages.forEach(function (text) {
      var p = document.createElement("p");
      p.textContent = text;
      errors.appendChild(p);
    });
    errors.hidden = messages.length === 0;
    if (messages.length) errors.scrollIntoView({ block: "nearest" });
  }

  function render() {
    var files = Array.prototype.slice.call(input.files || []);
    list.replaceChildren();
    var total = 0;
    files.forEach(function (file) {
      total += file.size;
      var li = document.createElement("li");
      var name = document.createElement("span");
      name.className = "name";
      name.textContent = file.name;
      var size = document.createElement("span");
      size.className = "size muted";
      size.textContent = human(file.size);
      li.append(name, size);
      if (accepted.indexOf(extension(file.name)) < 0) {
        li.className = "bad";
        li.title = "not an image or .zip file";
      }
      list.appendChild(li);
    });
    list.hidden = summary.hidden = files.length === 0;
    count.textContent = files.length + " file" + (files.length === 1 ? "" : "s") + " · " + human(total);
    zone.classList.toggle("has-files", files.length > 0);
  }

  function setFiles(files) {
    var transfer = new DataTransfer();
    files.forEach(function (file) { transfer.items.add(file); });
    input.files = transfer.files;
    render();
  }

  input.addEventListener("change", render);
  clear.addEventListener("click", function () { setFiles([]); });

  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (event) {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      zone.classList.add("over");
    });
  });
  zone.addEventListener("dragleave", function (event) {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove("over");
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    zone.classList.remove("over");
    var seen = {};
    var merged = [];
    Array.prototype.slice.call(input.files || []).concat(
      Array.prototype.slice.call(event.dataTransfer.files || [])
    ).forEach(function (file) {
      var key = file.name + "/" + file.size;
      if (!seen[key]) { seen[key] = true; merged.push(file); }
    });
    setFiles(merged);
  });

  // one dataset at a time: picking an existing one clears the new name, and the other way round
  existing.addEventListener("change", function () { if (existing.value) fresh.value = ""; });
  fresh.addEventListener("input", function () { if (fresh.value) existing.value = ""; });

  function progress(loaded, total) {
    var percent = total ? Math.floor((100 * loaded) / total) : 0;
    bar.firstElementChild.style.width = percent + "%";
    bar.setAttribute("aria-valuenow", String(percent));
    bytes.textContent = total ? human(loaded) + " of " + human(total) + " · " + percent + "%" : "";
    state.textContent = !total || percent < 100 ? "Uploading…" : "Upload complete. Starting the import…";
  }

  form.addEventListener("htmx:beforeRequest", function (event) {
    var n = (input.files || []).length;
    var tooMany = n > maxFiles;  // Django refuses the whole request: say so before uploading
    showErrors(tooMany ? [n + " files is more than " + maxFiles + " per upload: put them in a .zip file."] : []);
    if (tooMany) event.preventDefault();
    else progress(0, 0);
  });
  form.addEventListener("htmx:xhr:progress", function (event) {
    if (event.detail.lengthComputable) progress(event.detail.loaded, event.detail.total);
  });
  form.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    if (xhr.status === 400) { event.detail.shouldSwap = true; event.detail.isError = false; }  // what is wrong
    if (/\/login\//.test(xhr.responseURL || "")) {
      event.detail.shouldSwap = false;
      showErrors(["Your session has expired: reload the page and log in again."]);
    }
  });
  form.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    showErrors([xhr.status === 403 ? "Not allowed (403): your session may have expired. Reload the page and log in again."
      : "The upload failed: the server answered " + xhr.status + " " + xhr.statusText + "."]);
  });
  form.addEventListener("htmx:sendError", function () { showErrors(["The upload failed: the server could not be reached."]); });
  form.addEventListener("htmx:xhr:abort", function () { showErrors(["Upload cancelled."]); });

  render();
})();
