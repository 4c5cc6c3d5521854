//! The dashboard page: its routes over plain HTTP, and the page itself in a real browser
//! (Debian's Chromium, headless, driven over WebDriver by chromedriver through fantoccini)
//! against a running gateway.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use super::{config_with, embedded};
use crate::browser::Browser;
use crate::util::*;

const TOKEN: &str = "page-test-token-0123456789";

/// `GET url` with an optional bearer token and extra headers: status, headers, body.
fn get(
    url: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> (u16, ureq::http::HeaderMap, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().expect("HTTP request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (
        status,
        headers,
        resp.body_mut().read_to_vec().unwrap_or_default(),
    )
}

fn header<'a>(h: &'a ureq::http::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// A gateway with `dashboard.auth_reads`, the token, messages of at most 4 KiB, and the
/// given functions.
fn gateway(dir: &Path, cloud_url: &str, broker_port: u16, functions: &str) -> Kiri {
    let conf = config_with(cloud_url, &embedded(broker_port), functions).replacen(
        "[cloud]",
        "[dashboard]\nauth_reads = true\n[cloud]",
        1,
    );
    let env = [
        ("KIRI_DASHBOARD_TOKEN", TOKEN.to_string()),
        ("KIRI_BROKER_MAX_MESSAGE_BYTES", "4096".to_string()),
    ];
    Kiri::start(dir, &conf, &env)
}

#[test]
fn the_page_and_its_assets_are_served_open_and_the_history_behind_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let kiri = gateway(
        &dir.path().join("kiri"),
        &format!("mqtt://127.0.0.1:{}", free_port()),
        free_port(),
        "",
    );
    let base = format!("http://127.0.0.1:{}", kiri.metrics_port);

    // The page: open (it holds no data), revalidated, locked down.
    let (status, h, body) = get(&format!("{base}/"), None, &[]);
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&h, "cache-control"), "no-cache");
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    assert!(header(&h, "content-security-policy").contains("script-src 'self'"));
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains(r#"<meta name="viewport" content="width=device-width"#));
    let etag = header(&h, "etag").to_string();
    assert!(!etag.is_empty());
    let (status, _, body) = get(&format!("{base}/"), None, &[("If-None-Match", &etag)]);
    assert_eq!((status, body.len()), (304, 0), "unchanged: not sent again");

    // Every asset the page loads: embedded, with its type, cacheable for good (the address
    // changes with the content).
    let assets: Vec<&str> = page
        .split('"')
        .filter(|s| s.starts_with("/assets/"))
        .collect();
    let want = [
        "app.js",
        "sse.js",
        "app.css",
        "uPlot.iife.min.js",
        "uPlot.min.css",
        "uPlot-LICENSE.txt",
    ];
    for name in want {
        assert!(
            assets.iter().any(|a| a.contains(name)),
            "the page loads {name}: {assets:?}"
        );
    }
    for a in &assets {
        assert!(a.contains("?v="), "{a} is versioned");
        let (status, h, body) = get(&format!("{base}{a}"), None, &[]);
        assert_eq!(status, 200, "{a}");
        let ty = header(&h, "content-type");
        let expected = if a.contains(".js?") {
            "text/javascript; charset=utf-8"
        } else if a.contains(".css?") {
            "text/css; charset=utf-8"
        } else {
            "text/plain; charset=utf-8"
        };
        assert_eq!(ty, expected, "{a}");
        assert_eq!(
            header(&h, "cache-control"),
            "public, max-age=31536000, immutable",
            "{a}"
        );
        assert_eq!(header(&h, "x-content-type-options"), "nosniff");
        assert!(body.len() > 100, "{a} has content");
        let tag = header(&h, "etag").to_string();
        assert_eq!(
            get(&format!("{base}{a}"), None, &[("If-None-Match", &tag)]).0,
            304
        );
    }
    let (_, _, license) = get(
        &format!("{base}/assets/vendor/uPlot-LICENSE.txt"),
        None,
        &[],
    );
    assert!(String::from_utf8_lossy(&license).contains("MIT License"));
    let (status, h, _) = get(&format!("{base}/assets/nope.js"), None, &[]);
    assert_eq!(status, 404);
    assert_eq!(header(&h, "cache-control"), "no-store");

    // The history: a read like the others (here behind the token), one tick a second.
    let history = format!("{base}/api/v1/history");
    assert_eq!(
        get(&history, None, &[]).0,
        401,
        "auth_reads: the token is needed"
    );
    assert_eq!(get(&history, Some("wrong-token-0123456789"), &[]).0, 401);
    let mut ticks = Vec::new();
    wait_until(
        "three ticks in the history",
        Duration::from_secs(20),
        || {
            let (status, h, body) = get(&history, Some(TOKEN), &[]);
            assert_eq!((status, header(&h, "cache-control")), (200, "no-store"));
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["interval_ms"], 1000);
            ticks = v["ticks"].as_array().unwrap().clone();
            ticks.len() >= 3
        },
    );
    for pair in ticks.windows(2) {
        assert!(
            pair[0]["time_ms"].as_u64() < pair[1]["time_ms"].as_u64(),
            "oldest first"
        );
    }
    for key in [
        "events",
        "invocations",
        "errors",
        "backlog",
        "backlog_bytes",
        "delivered",
    ] {
        assert!(ticks[0][key].is_u64(), "{key} in {}", ticks[0]);
    }
    assert!(ticks[0]["connected"].is_boolean());
}

/// A function that fails until it is opened: an event on `gate/open` sets `open` in its state
/// (and logs "gate opened"); before that every other event fails with code 3 (logging "gate
/// closed"), after it each one is emitted on `gated` (logging "passed the gate").
fn gate_module(dir: &Path) -> PathBuf {
    let texts = [
        "open",
        "gate opened",
        "gate closed: refusing the event",
        "passed the gate",
        "gated",
    ];
    let mut data = String::new();
    let mut at = Vec::new();
    let mut offset = 0;
    for t in texts {
        data += &format!("(data (i32.const {offset}) \"{t}\")\n");
        at.push((offset, t.len()));
        offset += 64;
    }
    let [(key, key_len), (opened, opened_len), (closed, closed_len), (passed, passed_len), (gated, gated_len)] =
        at[..]
    else {
        unreachable!()
    };
    let wat = format!(
        r#"(module
  (import "kiri" "log" (func $log (param i32 i32 i32)))
  (import "kiri" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "kiri" "kv_put" (func $kv_put (param i32 i32 i32 i32) (result i32)))
  (import "kiri" "emit" (func $emit (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  {data}
  (func (export "kiri_abi_version") (result i32) i32.const 1)
  (func (export "kiri_alloc") (param i32) (result i32) i32.const 4096)
  (func (export "kiri_on_event") (param $t i32) (param $tl i32) (param $p i32) (param $pl i32) (param $at i64) (result i32)
    ;; "gate/open" is the only 9-byte topic under gate/
    (if (i32.eq (local.get $tl) (i32.const 9))
      (then
        (drop (call $kv_put (i32.const {key}) (i32.const {key_len}) (i32.const {key}) (i32.const {key_len})))
        (call $log (i32.const 2) (i32.const {opened}) (i32.const {opened_len}))
        (return (i32.const 0))))
    (if (i32.lt_s (call $kv_get (i32.const {key}) (i32.const {key_len}) (i32.const 2048) (i32.const 16)) (i32.const 0))
      (then
        (call $log (i32.const 1) (i32.const {closed}) (i32.const {closed_len}))
        (return (i32.const 3))))
    (drop (call $emit (i32.const {gated}) (i32.const {gated_len}) (local.get $p) (local.get $pl)))
    (call $log (i32.const 2) (i32.const {passed}) (i32.const {passed_len}))
    i32.const 0))"#
    );
    let path = dir.join("gate.wasm");
    std::fs::write(&path, wat::parse_str(&wat).expect("gate module")).unwrap();
    path
}

#[test]
fn the_dashboard_shows_the_gateway_live_in_a_browser() {
    let (dir, mut cloud, sub, broker_port) = super::site("page-consumer");
    let functions = format!(
        "[[functions]]\nname = \"convert\"\nmodule = \"{}\"\ntriggers = [\"sensors/+/temperature\"]\nhttp = true\n\
         [[functions]]\nname = \"gate\"\nmodule = \"{}\"\ntriggers = [\"gate/#\"]\nretries = 0\n",
        function_wasm("convert").display(),
        gate_module(dir.path()).display()
    );
    let kiri = gateway(
        &dir.path().join("kiri"),
        &cloud.url(),
        broker_port,
        &functions,
    );
    let browser = Browser::start();
    let base = format!("http://127.0.0.1:{}", kiri.metrics_port);
    browser.goto(&format!("{base}/#token={TOKEN}"));
    let t = Duration::from_secs(30);

    // The token moved from the address bar into the tab's session storage; reads work with it
    // (auth_reads is on), the live stream included.
    browser.wait_js(
        "the header shows the gateway",
        t,
        "return document.getElementById('gateway-id').textContent === 'gw-test'",
    );
    let (hash, stored) = {
        let v = browser.js("return [location.hash, sessionStorage.getItem('kiri.token')]");
        (v[0].clone(), v[1].clone())
    };
    assert_eq!(hash, "", "the token left the address bar");
    assert_eq!(stored, TOKEN);
    assert!(browser
        .js("return document.getElementById('gateway-version').textContent")
        .as_str()
        .unwrap()
        .starts_with('v'));
    browser.wait_js(
        "the live stream",
        t,
        "return document.getElementById('stream-state').textContent === 'live'",
    );
    browser.wait_js(
        "the uplink connected",
        t,
        "return document.getElementById('uplink-state').textContent === 'connected'",
    );
    // The charts' time axis reads on the 24-hour clock, as the rest of the page.
    assert_eq!(
        browser.js(
            "const t = new Date(2026, 0, 1, 13, 5, 0).getTime() / 1000; \
             const c = kiriCharts.events; \
             return [c.axes[0].values(c, [t, t + 60]), c.axes[0].values(c, [t, t + 15])].join(' ')"
        ),
        json!("13:05,13:06 13:05:00,13:05:15")
    );
    assert!(
        browser.js("return document.getElementById('notice').hidden") == Value::Bool(true),
        "no error shown: {}",
        browser.js("return document.getElementById('notice').textContent")
    );

    // Readings: the counters and the charts follow.
    let before = browser.number("stat-events");
    let points = |chart: &str| {
        browser
            .js(&format!("return kiriCharts.{chart}.data[0].length"))
            .as_u64()
            .unwrap()
    };
    let first = points("events");
    publish_all(
        broker_port,
        "s1",
        "sensors/s1/temperature",
        (0..30).map(|i| reading("s1", i)).collect(),
    );
    wait_until("the events counter to count 30 more", t, || {
        browser.number("stat-events") >= before + 30
    });
    wait_until("the invocations counter", t, || {
        browser.number("stat-invocations") >= 30
    });
    wait_until("the events chart to grow", t, || {
        points("events") >= first + 3
    });
    browser.wait_js(
        "events/s above zero on the chart",
        t,
        "return kiriCharts.events.data[1].some(v => v > 0)",
    );
    browser.wait_js(
        "invocations/s above zero on the chart",
        t,
        "return kiriCharts.invocations.data[1].some(v => v > 0)",
    );
    assert_eq!(
        points("backlog"),
        points("events"),
        "the charts share the ticks"
    );
    browser.wait_js(
        "convert in the functions table",
        t,
        r#"return [...document.querySelectorAll('#functions-body tr')]
        .some(tr => tr.cells[0].textContent === 'convert' && tr.cells[2].textContent === 'config'
            && tr.cells[3].textContent.endsWith(', http')
            && Number(tr.cells[4].textContent.replace(/,/g, '')) >= 30)"#,
    );

    // A failing event: dead-lettered, listed; its log line in the tail.
    browser.select("#log-function", "gate");
    publish_all(broker_port, "g", "gate/in", vec![reading("g", 1)]);
    browser.wait_js(
        "the dead letter in the list",
        t,
        r#"return [...document.querySelectorAll('#dead-letters-body tr')]
        .some(tr => tr.cells[1].textContent === 'gate' && tr.cells[3].textContent === 'error')"#,
    );
    browser.wait_js("the failure in the log tail", t,
        "return document.getElementById('log-lines').textContent.includes('gate closed: refusing the event')");
    let id = browser.js(
        r#"return [...document.querySelectorAll('#dead-letters-body tr')]
        .find(tr => tr.cells[1].textContent === 'gate').dataset.id"#,
    );
    let id = id.as_str().unwrap().to_string();

    // Open the gate (its state), then Replay: the event goes through and leaves the list.
    publish_all(broker_port, "g", "gate/open", vec![reading("g", 2)]);
    browser.wait_js(
        "the gate's live log line",
        t,
        "return document.getElementById('log-lines').textContent.includes('gate opened')",
    );
    browser.click(&format!(
        "#dead-letters-body tr[data-id='{id}'] button.replay"
    ));
    browser.wait_js(
        "the replayed entry to leave the list",
        t,
        &format!("return !document.querySelector(\"#dead-letters-body tr[data-id='{id}']\")"),
    );
    browser.wait_js(
        "the replay's log line",
        t,
        "return document.getElementById('log-lines').textContent.includes('passed the gate')",
    );
    wait_until("the replayed event at the cloud", t, || {
        sub.received
            .lock()
            .unwrap()
            .iter()
            .any(|(topic, _)| topic == "kiri/gw-test/gated")
    });

    // An input too large for any function: not replayable; Drop asks for a second press.
    publish_all(
        broker_port,
        "s1",
        "sensors/s1/temperature",
        vec![vec![0; 8192]],
    );
    browser.wait_js(
        "the rejected input in the list",
        t,
        r#"return [...document.querySelectorAll('#dead-letters-body tr')]
        .some(tr => tr.cells[3].textContent === 'oversized')"#,
    );
    let row = browser.js(
        r#"return [...document.querySelectorAll('#dead-letters-body tr')]
        .find(tr => tr.cells[3].textContent === 'oversized').dataset.id"#,
    );
    let row = format!("#dead-letters-body tr[data-id='{}']", row.as_str().unwrap());
    assert_eq!(
        browser.js(&format!(
            "return document.querySelector(\"{row} button.replay\").disabled"
        )),
        Value::Bool(true)
    );
    browser.click(&format!("{row} button.drop"));
    browser.wait_js(
        "the drop to ask for confirmation",
        t,
        &format!(
            "return document.querySelector(\"{row} button.drop\").textContent === 'Confirm drop'"
        ),
    );
    browser.click(&format!("{row} button.drop"));
    browser.wait_js(
        "the dropped entry to leave the list",
        t,
        &format!("return !document.querySelector(\"{row}\")"),
    );
    let (_, _, left) = get(&format!("{base}/api/v1/dead-letters"), Some(TOKEN), &[]);
    assert_eq!(
        String::from_utf8_lossy(&left),
        "[]",
        "both entries gone on the gateway too"
    );

    // The cloud goes away: the uplink shows it with the error, results pile up in the backlog.
    cloud.stop();
    browser.wait_js(
        "the uplink down, with its error",
        t,
        r#"return document.getElementById('uplink-state').textContent === 'down'
        && document.getElementById('uplink-error').textContent.startsWith('last error')"#,
    );
    publish_all(
        broker_port,
        "s1",
        "sensors/s1/temperature",
        (30..50).map(|i| reading("s1", i)).collect(),
    );
    wait_until("the backlog to show 20 results held", t, || {
        browser.number("backlog-depth") >= 20
    });
    browser.wait_js(
        "the backlog chart to show them",
        t,
        "return kiriCharts.backlog.data[1].some(v => v >= 20)",
    );

    browser.wait_js(
        "the backlog's age",
        t,
        "return document.getElementById('backlog-age').textContent !== 'none'",
    );
    browser.wait_js("the gate's three invocations in the functions table", t, r#"return [...document.querySelectorAll('#functions-body tr')]
        .some(tr => tr.cells[0].textContent === 'gate' && tr.cells[4].textContent === '3' && tr.cells[5].textContent === '1')"#);

    // Screenshots: the desktop, then a phone-sized window with no sideways scrolling.
    // The desktop window as tall as the page, so that one picture shows all of it.
    browser.resize(1280, 1000);
    browser.wait_js("the window resized", t, "return window.innerWidth > 1200");
    let sizes = browser.js(
        "return [window.outerHeight - window.innerHeight, document.documentElement.scrollHeight]",
    );
    let height = sizes[0].as_u64().unwrap() + sizes[1].as_u64().unwrap();
    browser.resize(1280, height.clamp(800, 4000) as u32);
    browser.wait_js(
        "the charts to fit the wider window",
        t,
        "return kiriCharts.events.width === document.getElementById('chart-events').clientWidth",
    );
    browser.screenshot("dashboard.png");
    browser.resize(390, 844);
    browser.wait_js(
        "the page to lay out for a phone",
        t,
        "return window.innerWidth <= 400",
    );
    browser.wait_js(
        "the charts to fit the phone",
        t,
        "return kiriCharts.events.width === document.getElementById('chart-events').clientWidth",
    );
    let widths = browser.js("return [document.documentElement.scrollWidth, window.innerWidth]");
    assert!(
        widths[0].as_u64() <= widths[1].as_u64(),
        "no horizontal overflow at phone width: {widths}"
    );
    browser.screenshot("dashboard-phone.png");
}

#[test]
fn the_pages_event_stream_reader_parses_any_chunking_and_reconnects_and_a_wrong_token_is_tried_once(
) {
    let dir = tempfile::tempdir().unwrap();
    let conf = config_with(
        &format!("mqtt://127.0.0.1:{}", free_port()),
        &embedded(free_port()),
        "",
    );
    let mut kiri = Kiri::start(
        &dir.path().join("kiri"),
        &conf,
        &[("KIRI_DASHBOARD_TOKEN", TOKEN.to_string())],
    );
    let browser = Browser::start();
    browser.goto(&format!(
        "http://127.0.0.1:{}/#token=a-wrong-token-0123456789",
        kiri.metrics_port
    ));
    let t = Duration::from_secs(30);
    browser.wait_js(
        "the page's scripts",
        t,
        "return typeof kiriSse === 'object' && typeof kiriCharts === 'object'",
    );

    // The parser, fed the same stream in every way a network can cut it; the answer is the
    // list of cases that went wrong.
    let failures = browser.js(
        r#"
        const stream = "\uFEFFdata: {\"a\":1}\n\n: a comment, as keep-alives are\n\nevent: lagged\ndata: 3\n\n" +
          "data: line 1\ndata: line 2\r\n\r\nid: 7\ndata:no space\r\rdata: é ü 😀\n\ndata\n\n" +
          "event: ignored without data\n\ndata: not ended";
        const want = JSON.stringify([
          ["message", "{\"a\":1}", ""], ["lagged", "3", ""], ["message", "line 1\nline 2", ""],
          ["message", "no space", "7"], ["message", "é ü 😀", "7"], ["message", "", "7"]]);
        const bytes = new TextEncoder().encode(stream);
        const run = (chunks) => {
          const got = [];
          const p = new kiriSse.Parser((e) => got.push([e.type, e.data, e.id]));
          chunks.forEach((c) => p.push(c));
          return JSON.stringify(got);
        };
        const failures = [];
        const check = (name, chunks) => { const got = run(chunks); if (got !== want) failures.push(name + ": " + got); };
        check("one string", [stream]);
        check("one buffer", [bytes]);
        for (let size = 1; size <= 7; size++) {
          const chunks = [];
          for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.slice(i, i + size));
          check("chunks of " + size + " bytes", chunks);
        }
        for (let i = 0; i <= bytes.length; i++) check("cut at " + i, [bytes.slice(0, i), bytes.slice(i)]);
        return failures;
        "#,
    );
    assert_eq!(failures, json!([]), "SSE parser cases that failed");

    // A wrong token: tried once, then no longer sent (wrong tokens count towards the lockout);
    // the open reads go on without it. Then the right one, typed into the token field.
    let points = || {
        browser
            .js("return kiriCharts.events.data[0].length")
            .as_u64()
            .unwrap()
    };
    browser.wait_js(
        "the refusal shown",
        t,
        "return document.getElementById('dead-letters-note').textContent.includes('refused the token')",
    );
    browser.wait_js(
        "the live stream, without the token",
        t,
        "return document.getElementById('stream-state').textContent === 'live'",
    );
    let seen = points();
    wait_until("two refreshes of the page", t, || points() >= seen + 11);
    assert_eq!(
        kiri.metric("kiri_http_unauthorized_total"),
        1.0,
        "the wrong token was sent once"
    );
    browser.type_into("#token-input", TOKEN);
    browser.click("#token-form button[type=submit]");
    browser.wait_js(
        "the dead letters with the right token",
        t,
        "return document.getElementById('dead-letters-note').textContent === 'None: every event was processed.'",
    );

    // The stream drops when the gateway stops, and comes back by itself when it returns.
    browser.wait_js(
        "the live stream",
        t,
        "return document.getElementById('stream-state').textContent === 'live'",
    );
    kiri.stop();
    browser.wait_js(
        "the page to notice",
        t,
        "return document.getElementById('stream-state').textContent === 'reconnecting'",
    );
    // The cards show the last known state greyed, not as current.
    browser.wait_js(
        "the cards greyed",
        t,
        "return document.getElementById('cards').classList.contains('stale')",
    );
    let before = browser
        .js("return kiriCharts.events.data[0].length")
        .as_u64()
        .unwrap();
    kiri.restart();
    browser.wait_js(
        "the stream back",
        t,
        "return document.getElementById('stream-state').textContent === 'live'",
    );
    assert_eq!(
        browser.js("return document.getElementById('cards').classList.contains('stale')"),
        serde_json::Value::Bool(false),
        "the cards are current again"
    );
    wait_until("ticks again after the restart", t, || {
        browser
            .js("return kiriCharts.events.data[0].length")
            .as_u64()
            .unwrap()
            >= before + 2
    });
}

#[test]
fn the_generated_dashboard_token_stays_out_of_the_log_and_kiri_dashboard_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    let kiri_dir = dir.path().join("kiri");
    let conf = config_with(
        &format!("mqtt://127.0.0.1:{}", free_port()),
        &embedded(free_port()),
        "",
    );
    std::fs::create_dir_all(&kiri_dir).unwrap();
    std::fs::write(kiri_dir.join("kiri.toml"), &conf).unwrap();
    let dashboard = |port: u16| {
        let out = Command::new(env!("CARGO_BIN_EXE_kiri"))
            .args(["dashboard", "--config"])
            .arg(kiri_dir.join("kiri.toml"))
            .env("KIRI_DASHBOARD_LISTEN", format!("127.0.0.1:{port}"))
            .env("KIRI_GATEWAY_DATA_DIR", kiri_dir.join("data"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let prefix = format!("Dashboard: http://127.0.0.1:{port}/#token=");
        let token = stdout.trim().strip_prefix(&prefix).map(str::to_string);
        token.unwrap_or_else(|| panic!("{stdout:?} does not start with {prefix:?}"))
    };
    let mut kiri = Kiri::start(&kiri_dir, &conf, &[]);
    let port = kiri.metrics_port;
    assert!(kiri.log_text().contains("generated the dashboard token"));
    // Read while the gateway runs, from a file of its own that only the gateway's user reads.
    let token = dashboard(port);
    assert_eq!(token.len(), 64);
    use std::os::unix::fs::PermissionsExt;
    let kept = std::fs::metadata(kiri_dir.join("data/dashboard-token")).unwrap();
    assert_eq!(kept.permissions().mode() & 0o777, 0o600);
    assert!(
        !kiri.log_text().contains(&token),
        "the token is not in the log"
    );
    // It is the token: the API takes it, after a restart too.
    kiri.stop();
    kiri.restart();
    assert_eq!(
        kiri.invoke("nope", Some(&token), b"").0,
        404,
        "authorized, then not found"
    );
    assert_eq!(
        kiri.invoke("nope", Some("wrong-token-0123456789"), b"").0,
        401
    );
    kiri.stop();
    assert_eq!(dashboard(port), token, "the token stays");
    assert!(!kiri.log_text().contains(&token));

    // Before the gateway ever ran (what `make run` does first), `kiri dashboard` makes the
    // token the gateway then uses.
    let fresh = tempfile::tempdir().unwrap();
    let fresh_dir = fresh.path().join("kiri");
    std::fs::create_dir_all(&fresh_dir).unwrap();
    std::fs::write(fresh_dir.join("kiri.toml"), &conf).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiri"))
        .args(["dashboard", "--config"])
        .arg(fresh_dir.join("kiri.toml"))
        .env("KIRI_GATEWAY_DATA_DIR", fresh_dir.join("data"))
        .output()
        .unwrap();
    let made = String::from_utf8_lossy(&out.stdout);
    let made = made.trim().rsplit("#token=").next().unwrap().to_string();
    assert_eq!(made.len(), 64, "{made}");
    let mut second = Kiri::start(&fresh_dir, &conf, &[]);
    assert!(!second.log_text().contains("generated the dashboard token"));
    assert_eq!(second.invoke("nope", Some(&made), b"").0, 404);
    second.stop();
}
