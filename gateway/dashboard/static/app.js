// Progressive enhancement for the dashboard: every page works without this file.
// - the theme toggle; - dialogs: htmx loads content into #modal-body, we open it modally (the
//   browser keeps focus inside) and give focus back to the opener on close; - HX-Trigger events
//   from the server (close-modal, flash); - copy buttons; - chips for list fields.
(function () {
  "use strict";
  var root = document.documentElement;

  function prefersDark() {
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  }
  function currentTheme() {
    return root.dataset.theme || (prefersDark() ? "dark" : "light");
  }
  function setupTheme() {
    var button = document.getElementById("theme-toggle");
    if (!button) return;
    var sync = function () {
      var dark = currentTheme() === "dark";
      button.setAttribute("aria-pressed", dark ? "true" : "false");
    };
    button.hidden = false;
    sync();
    button.addEventListener("click", function () {
      var next = currentTheme() === "dark" ? "light" : "dark";
      root.dataset.theme = next;
      try { localStorage.setItem("tollway-theme", next); } catch (e) { /* not kept */ }
      sync();
    });
  }

  var opener = null;
  function modal() { return document.getElementById("modal"); }
  function openModal() {
    var dialog = modal();
    if (!dialog) return;
    if (!dialog.open) {
      opener = document.activeElement;
      dialog.showModal();
    }
    var first = dialog.querySelector("[autofocus], input:not([type=hidden]):not([readonly]), select, textarea:not([readonly]), button");
    if (first) first.focus();
  }
  function closeModal() {
    var dialog = modal();
    if (dialog && dialog.open) dialog.close();
  }
  function setupModal() {
    var dialog = modal();
    if (!dialog) return;
    dialog.addEventListener("close", function () {
      document.getElementById("modal-body").innerHTML = "";
      if (opener && document.contains(opener)) opener.focus();
      opener = null;
    });
    dialog.addEventListener("click", function (event) {
      if (event.target.closest("[data-close]")) closeModal();
    });
  }

  function flash(message) {
    var box = document.getElementById("flash");
    if (!box) return;
    var p = document.createElement("p");
    p.className = "banner success";
    p.textContent = message;
    box.replaceChildren(p);
  }

  function copy(button) {
    var source = document.getElementById(button.dataset.copy);
    if (!source) return;
    var text = source.value !== undefined ? source.value : source.textContent;
    var done = function () {
      var label = button.textContent;
      button.textContent = "Copied";
      button.setAttribute("aria-live", "polite");
      setTimeout(function () { button.textContent = label; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { source.select(); });
    } else {
      source.select();
      try { document.execCommand("copy"); done(); } catch (e) { /* selected for the user */ }
    }
  }

  // Chips: the textarea stays the form's field (one item per line) and the fallback without
  // scripts; we show its items as removable chips and an input that adds them.
  function setupChips(scope) {
    scope.querySelectorAll("[data-chips]").forEach(function (box) {
      if (box.dataset.ready) return;
      box.dataset.ready = "1";
      var area = box.querySelector("textarea");
      var items = area.value.split(/[\s,]+/).filter(Boolean);
      var list = document.createElement("ul");
      list.className = "chip-list";
      var input = document.createElement("input");
      input.type = "text";
      input.className = "chip-input";
      input.id = area.id;  // the label now points at the input
      area.id = area.id + "-values";
      if (box.dataset.list) input.setAttribute("list", box.dataset.list);
      ["aria-describedby", "aria-invalid"].forEach(function (name) {
        if (area.hasAttribute(name)) input.setAttribute(name, area.getAttribute(name));
      });
      input.setAttribute("autocomplete", "off");
      area.hidden = true;
      area.setAttribute("aria-hidden", "true");
      area.tabIndex = -1;
      function render() {
        list.replaceChildren();
        items.forEach(function (item, index) {
          var li = document.createElement("li");
          li.className = "chip";
          var text = document.createElement("span");
          text.textContent = item;
          var remove = document.createElement("button");
          remove.type = "button";
          remove.className = "chip-remove";
          remove.setAttribute("aria-label", "Remove " + item);
          remove.textContent = "×";
          remove.addEventListener("click", function () {
            items.splice(index, 1);
            render();
            input.focus();
          });
          li.append(text, remove);
          list.append(li);
        });
        area.value = items.join("\n");
      }
      function add() {
        input.value.split(/[\s,]+/).filter(Boolean).forEach(function (item) {
          if (items.indexOf(item) < 0) items.push(item);
        });
        input.value = "";
        render();
      }
      input.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === "," || event.key === " ") {
          if (input.value.trim()) { event.preventDefault(); add(); }
          else if (event.key === "Enter") { event.preventDefault(); }
        } else if (event.key === "Backspace" && !input.value && items.length) {
          items.pop();
          render();
        }
      });
      input.addEventListener("change", function () { if (input.value.trim()) add(); });
      input.addEventListener("blur", function () { if (input.value.trim()) add(); });
      // Text typed but not yet a chip is sent too (a submit right after typing keeps it).
      input.addEventListener("input", function () {
        area.value = items.concat(input.value.split(/[\s,]+/).filter(Boolean)).join("\n");
      });
      render();
      box.append(list, input);
    });
  }

  function enhance(scope) {
    setupChips(scope);
    scope.querySelectorAll("[data-copy]").forEach(function (button) { button.hidden = false; });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (button) copy(button);
  });
  document.body.addEventListener("htmx:afterSwap", function (event) {
    // An answer that swapped nothing (HX-Reswap: none, e.g. "saved, close the dialog") opens nothing.
    var xhr = event.detail.xhr;
    if (xhr && xhr.getResponseHeader("HX-Reswap") === "none") return;
    if (event.detail.target && event.detail.target.id === "modal-body") openModal();
  });
  document.body.addEventListener("htmx:load", function (event) { enhance(event.target); });
  document.body.addEventListener("close-modal", closeModal);
  document.body.addEventListener("flash", function (event) {
    flash(event.detail && event.detail.value !== undefined ? event.detail.value : String(event.detail || ""));
  });
  setupTheme();
  setupModal();
  enhance(document);
})();
