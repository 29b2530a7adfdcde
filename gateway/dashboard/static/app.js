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
    // Content that says it is a drawer (the Test panel) opens at the right edge.
    dialog.classList.toggle("drawer", !!dialog.querySelector("[data-drawer]"));
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
    var source = button.dataset.copy ? document.getElementById(button.dataset.copy) : null;
    if (!source && button.dataset.copyValue === undefined) return;
    var text = source ? (source.value !== undefined ? source.value : source.textContent) : button.dataset.copyValue;
    var done = function () {
      if (button.dataset.copied) flash(button.dataset.copied);
      var label = button.textContent;
      button.textContent = "Copied";
      button.setAttribute("aria-live", "polite");
      setTimeout(function () { button.textContent = label; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { if (source) source.select(); });
    } else if (source) {
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

  // The ⋯ menus: a plain list of actions without scripts; here a menu button (Enter, Space or
  // ArrowDown opens it, arrows move, Escape closes and returns focus, Tab leaves).
  function setupMenus(scope) {
    scope.querySelectorAll("[data-menu]").forEach(function (box) {
      if (box.dataset.ready) return;
      box.dataset.ready = "1";
      var button = box.querySelector(".menu-button");
      var list = box.querySelector(".menu-list");
      var items = Array.prototype.slice.call(list.querySelectorAll(".menu-item"));
      list.setAttribute("role", "menu");
      list.querySelectorAll("li").forEach(function (li) { li.setAttribute("role", "none"); });
      items.forEach(function (item) { item.setAttribute("role", "menuitem"); item.tabIndex = -1; });
      box.classList.add("enhanced");
      button.hidden = false;
      function open(focusIndex) {
        closeMenus(box);
        box.classList.add("open");
        button.setAttribute("aria-expanded", "true");
        if (items.length) items[Math.max(0, Math.min(items.length - 1, focusIndex))].focus();
      }
      function close(refocus) {
        box.classList.remove("open");
        button.setAttribute("aria-expanded", "false");
        if (refocus) button.focus();
      }
      box.menuClose = close;
      button.addEventListener("click", function () {
        if (box.classList.contains("open")) close(true); else open(0);
      });
      button.addEventListener("keydown", function (event) {
        if (event.key === "ArrowDown") { event.preventDefault(); open(0); }
        if (event.key === "ArrowUp") { event.preventDefault(); open(items.length - 1); }
      });
      list.addEventListener("keydown", function (event) {
        var index = items.indexOf(document.activeElement);
        if (event.key === "ArrowDown") { event.preventDefault(); items[(index + 1) % items.length].focus(); }
        else if (event.key === "ArrowUp") { event.preventDefault(); items[(index - 1 + items.length) % items.length].focus(); }
        else if (event.key === "Home") { event.preventDefault(); items[0].focus(); }
        else if (event.key === "End") { event.preventDefault(); items[items.length - 1].focus(); }
        else if (event.key === "Escape") { event.preventDefault(); close(true); }
        else if (event.key === "Tab") { close(false); }
      });
      list.addEventListener("click", function () { close(false); });
    });
  }
  function closeMenus(except) {
    document.querySelectorAll("[data-menu].open").forEach(function (box) {
      if (box !== except && box.menuClose) box.menuClose(false);
    });
  }

  // Rows of a form (static headers, secret mappings): add a copy of the last row, remove one.
  function setupRows(scope) {
    scope.querySelectorAll("[data-rows]").forEach(function (set) {
      if (set.dataset.ready) return;
      set.dataset.ready = "1";
      var list = set.querySelector(".row-list");
      var add = set.querySelector("[data-add-row]");
      var counter = list.children.length;
      set.querySelectorAll("[data-remove-row]").forEach(function (b) { b.hidden = false; });
      add.hidden = false;
      add.addEventListener("click", function () {
        var last = list.lastElementChild;
        var row = last.cloneNode(true);
        counter += 1;
        row.querySelectorAll("[id]").forEach(function (el) { el.id = el.id.replace(/-\d+$/, "-" + counter); });
        row.querySelectorAll("label[for]").forEach(function (el) { el.htmlFor = el.htmlFor.replace(/-\d+$/, "-" + counter); });
        row.querySelectorAll("input:not([type=hidden])").forEach(function (el) { el.value = ""; });
        row.querySelectorAll("input[type=hidden]").forEach(function (el) { el.value = ""; });
        row.querySelectorAll("select").forEach(function (el) { el.selectedIndex = 0; });
        list.append(row);
        var first = row.querySelector("input, select");
        if (first) first.focus();
      });
      set.addEventListener("click", function (event) {
        var remove = event.target.closest("[data-remove-row]");
        if (!remove) return;
        var row = remove.closest("[data-row]");
        if (list.children.length > 1) row.remove();
        else row.querySelectorAll("input, select").forEach(function (el) { if (el.tagName === "SELECT") el.selectedIndex = 0; else el.value = ""; });
        add.focus();
      });
    });
  }

  // A JSON box says "Invalid JSON" as you type (the server checks it again on save).
  function setupJson(scope) {
    scope.querySelectorAll("textarea[data-json]").forEach(function (area) {
      if (area.dataset.ready) return;
      area.dataset.ready = "1";
      var message = area.parentElement.querySelector("[data-json-error]");
      area.addEventListener("input", function () {
        var bad = false;
        if (area.value.trim()) { try { JSON.parse(area.value); } catch (e) { bad = true; } }
        if (message) message.hidden = !bad;
        if (bad) area.setAttribute("aria-invalid", "true"); else area.removeAttribute("aria-invalid");
      });
    });
  }

  function enhance(scope) {
    setupChips(scope);
    setupMenus(scope);
    setupRows(scope);
    setupJson(scope);
    scope.querySelectorAll("[data-copy], [data-copy-value]").forEach(function (button) { button.hidden = false; });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy], [data-copy-value]");
    if (button) copy(button);
    if (!event.target.closest("[data-menu]")) closeMenus(null);
  });
  document.body.addEventListener("htmx:afterSwap", function (event) {
    // An answer that swapped nothing (HX-Reswap: none, e.g. "saved, close the dialog") opens nothing.
    var xhr = event.detail.xhr;
    if (xhr && xhr.getResponseHeader("HX-Reswap") === "none") return;
    if (event.detail.target && event.detail.target.id === "modal-body") openModal();
  });
  // A form marked data-json-guard sends nothing while one of its JSON boxes is invalid.
  document.body.addEventListener("htmx:beforeRequest", function (event) {
    var form = event.detail.elt;
    if (!form || !form.matches || !form.matches("form[data-json-guard]")) return;
    var bad = null;
    form.querySelectorAll("textarea[data-json]").forEach(function (area) {
      if (bad || !area.value.trim()) return;
      try { JSON.parse(area.value); } catch (e) { bad = area; }
    });
    if (!bad) return;
    event.preventDefault();
    var message = bad.parentElement.querySelector("[data-json-error]");
    if (message) message.hidden = false;
    bad.setAttribute("aria-invalid", "true");
    bad.focus();
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
