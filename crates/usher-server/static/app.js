// Usher's one script: the seat map (pick with mouse or keyboard, live states over the
// performance's WebSocket), live counts, the hold countdown, the seating-plan
// builder, the waiting room and the door's code field. Pages work without it where
// they can (forms post normally); nothing here is inline, so the pages' CSP forbids
// inline script entirely.
"use strict";

(function () {
  // ------------------------------------------------------------ seat map
  function SeatMap(svg) {
    this.svg = svg;
    this.mode = svg.dataset.mode || "buy";
    this.max = parseInt(svg.dataset.max || "10", 10);
    this.currency = svg.dataset.currency || "EUR";
    this.seats = Array.prototype.slice.call(svg.querySelectorAll(".seat"));
    this.byId = {};
    this.rows = [];
    this.picked = [];
    var self = this;
    this.seats.forEach(function (seat) {
      self.byId[seat.dataset.unit] = seat;
      var r = parseInt(seat.dataset.row, 10);
      (self.rows[r] = self.rows[r] || []).push(seat);
    });
    this.panel = svg.closest(".panel") || document;
    this.form = this.panel.querySelector("[data-pick-form]");
    this.notice = document.querySelector("[data-taken-notice]");
    this.money = new Intl.NumberFormat(undefined, { style: "currency", currency: this.currency });
    // Prices are in minor units: cents for most currencies, whole yen for JPY.
    this.minorPerMajor = Math.pow(10, this.money.resolvedOptions().maximumFractionDigits);
    svg.addEventListener("click", function (e) {
      var seat = e.target.closest(".seat");
      if (seat) { self.focus(seat); self.toggle(seat); }
    });
    svg.addEventListener("keydown", function (e) { self.key(e); });
    this.resetTabStop();
    this.render();
  }

  SeatMap.prototype.pickable = function (seat) {
    var state = seat.dataset.state;
    return state === "available" || (this.mode === "manage" && state === "blocked");
  };

  SeatMap.prototype.resetTabStop = function () {
    var current = this.svg.querySelector('.seat[tabindex="0"]');
    if (current) return;
    var first = this.seats.filter(this.pickable, this)[0] || this.seats[0];
    if (first) first.setAttribute("tabindex", "0");
  };

  SeatMap.prototype.focus = function (seat) {
    this.seats.forEach(function (s) { s.setAttribute("tabindex", "-1"); });
    seat.setAttribute("tabindex", "0");
    seat.focus();
  };

  SeatMap.prototype.toggle = function (seat) {
    var id = seat.dataset.unit;
    var at = this.picked.indexOf(id);
    if (at >= 0) {
      this.picked.splice(at, 1);
    } else if (this.pickable(seat)) {
      if (this.mode === "buy" && this.picked.length >= this.max) {
        this.say("You can pick up to " + this.max + " seats in one booking.");
        return;
      }
      this.picked.push(id);
    }
    this.render();
  };

  SeatMap.prototype.key = function (e) {
    var seat = e.target.closest(".seat");
    if (!seat) return;
    var row = parseInt(seat.dataset.row, 10);
    var inRow = this.rows[row] || [];
    var i = inRow.indexOf(seat);
    var next = null;
    switch (e.key) {
      case "ArrowLeft": next = inRow[i - 1]; break;
      case "ArrowRight": next = inRow[i + 1]; break;
      case "ArrowUp": next = this.nearest(row - 1, seat); break;
      case "ArrowDown": next = this.nearest(row + 1, seat); break;
      case "Home": next = inRow[0]; break;
      case "End": next = inRow[inRow.length - 1]; break;
      case " ": case "Enter": e.preventDefault(); this.toggle(seat); return;
      default: return;
    }
    e.preventDefault();
    if (next) this.focus(next);
  };

  SeatMap.prototype.nearest = function (row, from) {
    var seats = this.rows[row];
    if (!seats) return null;
    var x = parseFloat(from.getAttribute("cx"));
    return seats.reduce(function (best, s) {
      var d = Math.abs(parseFloat(s.getAttribute("cx")) - x);
      return !best || d < best.d ? { s: s, d: d } : best;
    }, null).s;
  };

  // A unit changed state (from the live feed).
  SeatMap.prototype.apply = function (unitId, state) {
    var seat = this.byId[unitId];
    if (!seat || seat.dataset.state === state) return false;
    seat.dataset.state = state;
    var at = this.picked.indexOf(unitId);
    if (at >= 0 && !this.pickable(seat)) {
      this.picked.splice(at, 1);
      if (this.mode === "buy") {
        this.say(seat.dataset.short + " was just taken by someone else. Pick another seat.");
      }
    }
    return true;
  };

  SeatMap.prototype.say = function (text) {
    if (!this.notice) return;
    this.notice.textContent = text;
    this.notice.hidden = false;
  };

  SeatMap.prototype.render = function () {
    var self = this;
    var total = 0;
    var names = [];
    this.seats.forEach(function (seat) {
      var picked = self.picked.indexOf(seat.dataset.unit) >= 0;
      seat.setAttribute("class", "seat " + seat.dataset.state + (picked ? " picked" : ""));
      seat.setAttribute("aria-checked", picked ? "true" : "false");
      seat.setAttribute("aria-disabled", self.pickable(seat) || picked ? "false" : "true");
      var said = seat.dataset.name + ", " + (picked ? "picked" : seat.dataset.state);
      seat.setAttribute("aria-label", said);
      var tip = seat.querySelector("title");
      if (tip) tip.textContent = said;
      if (picked) {
        total += parseInt(seat.dataset.price, 10);
        names.push(seat.dataset.short);
      }
    });
    if (!this.form) return;
    this.form.querySelector("[data-picked-input]").value = this.picked.join(",");
    var text = this.form.querySelector("[data-selection]");
    if (this.picked.length === 0) {
      text.textContent = this.mode === "buy"
        ? "No seats picked yet. You can pick up to " + this.max + "."
        : "No seats picked.";
    } else {
      var what = this.picked.length === 1 ? "1 seat" : this.picked.length + " seats";
      text.textContent = what + ": " + names.join(", ") +
        (this.mode === "buy" ? " — " + this.money.format(total / this.minorPerMajor) : "");
    }
    this.form.querySelectorAll("[data-pick-submit]").forEach(function (b) {
      b.disabled = self.picked.length === 0;
    });
  };

  // ------------------------------------------------------------ live feed
  function Live(performanceId, map) {
    this.id = performanceId;
    this.map = map;
    this.seq = null;
    this.delay = 500;
    this.status = document.querySelector("[data-live-status]");
    this.open();
  }

  Live.prototype.open = function () {
    var self = this;
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + "/v1/performances/" + this.id + "/live");
    this.socket = socket;
    socket.onopen = function () { self.delay = 500; };
    socket.onmessage = function (e) { self.message(JSON.parse(e.data)); };
    socket.onclose = function () {
      self.show("Reconnecting to live updates…");
      // A fresh snapshot on reconnect covers whatever was missed meanwhile.
      setTimeout(function () { self.open(); }, self.delay);
      self.delay = Math.min(self.delay * 2, 10000);
    };
  };

  Live.prototype.message = function (m) {
    if (m.type === "snapshot") {
      this.seq = m.seq;
      var map = this.map;
      if (map && m.units) m.units.forEach(function (u) { map.apply(u.unit_id, u.state); });
      if (map) map.render();
      this.show("Live: seats update as people book.");
      document.body.dataset.liveSeq = String(m.seq);
    } else if (m.type === "units") {
      if (this.seq !== null && m.seq !== this.seq + 1) {
        // A gap: start again from a snapshot.
        this.seq = null;
        this.socket.close();
        return;
      }
      this.seq = m.seq;
      if (this.map) {
        var map2 = this.map;
        m.changes.forEach(function (c) { map2.apply(c.unit_id, c.state); });
        map2.render();
      }
      document.body.dataset.liveSeq = String(m.seq);
    } else {
      return;
    }
    ["available", "held", "sold"].forEach(function (k) {
      if (typeof m[k] !== "number") return;
      document.querySelectorAll('[data-count="' + k + '"]').forEach(function (el) {
        el.textContent = String(m[k]);
      });
    });
    (m.ticket_types || []).forEach(function (t) {
      document.querySelectorAll('[data-ticket-type="' + t.id + '"]').forEach(function (el) {
        el.textContent = String(t.available);
      });
    });
  };

  Live.prototype.show = function (text) {
    if (this.status) this.status.textContent = text;
  };

  // ------------------------------------------------------------ countdown
  function countdown(el) {
    var ends = Date.parse(el.dataset.countdown);
    var left = el.querySelector("[data-countdown-left]");
    function tick() {
      var ms = ends - Date.now();
      if (ms <= 0) {
        left.textContent = "0:00";
        document.querySelectorAll("[data-hold-active]").forEach(function (n) { n.hidden = true; });
        var expired = document.querySelector("[data-countdown-expired]");
        if (expired) expired.hidden = false;
        return;
      }
      var s = Math.floor(ms / 1000);
      left.textContent = Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
      setTimeout(tick, 1000 - (ms % 1000));
    }
    tick();
  }

  // ------------------------------------------------------------ plan builder
  function builder(form) {
    var radios = form.querySelectorAll("[data-kind]");
    function showKind() {
      var kind = form.querySelector("[data-kind]:checked");
      form.querySelectorAll("[data-kind-panel]").forEach(function (p) {
        p.hidden = !kind || p.dataset.kindPanel !== kind.value;
      });
    }
    radios.forEach(function (r) { r.addEventListener("change", showKind); });
    showKind();
    form.querySelectorAll("[data-add-line]").forEach(function (button) {
      button.addEventListener("click", function () {
        var body = button.parentNode.querySelector("[data-lines]");
        var last = body.lastElementChild;
        var line = last.cloneNode(true);
        var n = body.children.length + 1;
        line.querySelectorAll("input").forEach(function (input) {
          input.value = "";
          var label = input.getAttribute("aria-label") || "";
          input.setAttribute("aria-label", label.replace(/\d+/, String(n)));
        });
        body.appendChild(line);
        line.querySelector("input").focus();
      });
    });
  }

  // The waiting room: the ticket over its WebSocket, shown as it changes.
  function queue(panel) {
    var id = panel.dataset.queue, delay = 500;
    var status = panel.querySelector("[data-live-status]");
    function part(name) { return panel.querySelector("[data-queue-" + name + "]"); }
    function wait(s) {
      if (s === null || s === undefined) return "not known yet";
      if (s === 0) return "any moment now";
      if (s < 60) return "under a minute";
      if (s < 3600) return "about " + Math.ceil(s / 60) + " minutes";
      return "about " + Math.ceil(s / 3600) + " hours";
    }
    function show(t) {
      part("waiting").hidden = t.state !== "waiting";
      part("admitted").hidden = t.state !== "admitted";
      part("closed").hidden = t.state !== "closed";
      part("position").textContent = String(t.position);
      part("eta").textContent = wait(t.eta_seconds);
      if (t.state === "admitted" && t.admission_token) {
        part("go").href = "/performances/" + t.performance_id + "?admission=" + encodeURIComponent(t.admission_token);
        if (t.admission_expires_at) {
          part("until").textContent = new Date(t.admission_expires_at).toISOString().slice(11, 16) + " UTC";
        }
        part("go").focus();
      }
    }
    function open() {
      var scheme = location.protocol === "https:" ? "wss://" : "ws://";
      var socket = new WebSocket(scheme + location.host + "/v1/queue/" + id + "/live");
      socket.onopen = function () { delay = 500; status.textContent = "Live: this page updates by itself."; };
      socket.onmessage = function (e) { show(JSON.parse(e.data)); };
      socket.onclose = function () {
        status.textContent = "Reconnecting…";
        delay = Math.min(delay * 2, 10000);
        setTimeout(open, delay);
      };
    }
    open();
  }

  // The door's code field: a USB scanner "types" into whatever has the focus, so the
  // field takes it back whenever it drifts to nothing in particular (a click on the
  // page, the verdict). Links, buttons and other fields may still be used.
  function keepFocus(field) {
    field.focus();
    field.select();
    field.addEventListener("blur", function () {
      setTimeout(function () {
        var now = document.activeElement;
        if (!now || now === document.body || !now.matches("a, button, input, select, textarea, summary")) {
          field.focus();
        }
      }, 0);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-keep-focus]").forEach(keepFocus);
    document.querySelectorAll("[data-queue]").forEach(function (panel) {
      if ("WebSocket" in window) queue(panel);
    });
    var svg = document.querySelector("[data-seatmap]");
    var map = svg ? new SeatMap(svg) : null;
    var live = document.querySelector("[data-live-counts]") || svg;
    if (live && live.dataset.performance && "WebSocket" in window) {
      new Live(live.dataset.performance, map);
    }
    document.querySelectorAll("[data-countdown]").forEach(countdown);
    document.querySelectorAll("[data-builder]").forEach(builder);
  });
})();
