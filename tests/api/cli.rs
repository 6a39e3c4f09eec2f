//! The `kedai` binary as an operator runs it: subcommands, configuration
//! errors, and graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEDAI: &str = env!("CARGO_BIN_EXE_kedai");

/// A command with a clean environment: no inherited `KEDAI__*` variables.
fn kedai(dir: &std::path::Path) -> Command {
    let mut command = Command::new(KEDAI);
    command.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("KEDAI") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command.env(
        "KEDAI__DATABASE__URL",
        format!("sqlite://{}?mode=rwc", dir.join("kedai.db").display()),
    );
    command
}

#[test]
fn config_prints_the_effective_settings_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let output = kedai(dir.path())
        .arg("config")
        .env("KEDAI__STRIPE__WEBHOOK_SECRET", "whsec_do_not_print")
        .env("KEDAI__SERVER__PUBLIC_URL", "https://shop.example.com")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(
        printed.contains("public_url = \"https://shop.example.com/\""),
        "{printed}"
    );
    assert!(printed.contains("webhook_secret = \"<redacted>\""));
    assert!(!printed.contains("do_not_print"));
}

#[test]
fn a_misspelt_key_stops_startup_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = kedai(dir.path())
        .arg("config")
        .env("KEDAI__SERVER__BNID", "0.0.0.0:80")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("bnid"), "{error}");

    let output = kedai(dir.path())
        .arg("config")
        .env("KEDAI__QUEUE__KIND", "kafka")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("queue.kind"));
}

#[test]
fn a_profile_file_is_layered_over_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/staging.toml"),
        "[catalog]\npage_size = 12\n",
    )
    .unwrap();
    let output = kedai(dir.path())
        .arg("config")
        .env("KEDAI_PROFILE", "staging")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains("# profile: staging"));
    assert!(printed.contains("page_size = 12"));

    let missing = kedai(dir.path())
        .arg("config")
        .env("KEDAI_PROFILE", "nope")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.toml"));
}

#[test]
fn migrate_and_seed_demo_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let output = kedai(dir.path()).arg("migrate").output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let first = kedai(dir.path()).arg("seed-demo").output().unwrap();
    assert!(String::from_utf8_lossy(&first.stdout).contains("seeded 220 demo products"));
    let second = kedai(dir.path()).arg("seed-demo").output().unwrap();
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stdout).contains("nothing seeded"));
}

#[test]
fn messages_list_shows_the_recorded_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("kedai.db").display()
    );
    // Record a message through the library, as the shop would.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let settings = kedai::config::Settings::load(&kedai::config::ConfigSources {
            overrides: vec![("database.url".into(), url.clone())],
            ..Default::default()
        })
        .unwrap();
        let connection = kedai::platform::db::connect(&settings.database)
            .await
            .unwrap();
        kedai::platform::db::migrate(&connection).await.unwrap();
        let writer = kedai::platform::db::Writer::new(connection);
        let messaging = kedai::app::messaging(&settings, writer).unwrap();
        for (to, kind, text) in [
            ("+60123456789", "password_reset", "hello from the test"),
            ("+60111111111", "order_paid", "another one"),
        ] {
            messaging
                .send(kedai::platform::messaging::Outgoing {
                    idempotency_key: None,
                    kind: kind.into(),
                    recipient: to.into(),
                    text: text.into(),
                    variables: vec![],
                })
                .await
                .unwrap();
        }
    });
    let output = kedai(dir.path())
        .args(["messages", "list", "--to", "+60 12-345 6789", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["to"], "+60123456789");
    assert_eq!(rows[0]["kind"], "password_reset");
    assert_eq!(rows[0]["status"], "recorded");
    let table = kedai(dir.path())
        .args(["messages", "list"])
        .output()
        .unwrap();
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.contains("another one") && text.contains("hello from the test"),
        "{text}"
    );
}

#[test]
fn serve_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = kedai(dir.path())
        .arg("serve")
        .env("KEDAI__SERVER__BIND", "127.0.0.1:0")
        .env("KEDAI__SERVER__SHUTDOWN_GRACE", "5s")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The JSON log says which port it listens on.
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("the server logs before exiting")
            .unwrap();
        let entry: serde_json::Value = serde_json::from_str(&line).expect("log lines are JSON");
        if entry["message"] == "kedai is listening" {
            break entry["port"].as_u64().unwrap();
        }
    };
    let body = http::blocking_get(&format!("http://127.0.0.1:{port}/readyz"));
    assert!(body.contains("\"ready\""), "{body}");

    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not stop within the grace period"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("\"stopped\"")), "{rest:?}");
}

/// A tiny blocking GET, so this test needs no async runtime.
mod http {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    pub fn blocking_get(url: &str) -> String {
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_once('/').unwrap();
        let mut stream = TcpStream::connect(host).unwrap();
        write!(
            stream,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }
}

#[test]
fn operators_drive_the_event_bus_and_shipments_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("kedai.db").display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let order = runtime.block_on(async {
        let settings = kedai::config::Settings::load(&kedai::config::ConfigSources {
            overrides: vec![
                ("database.url".into(), url.clone()),
                ("notify.quiet_hours".into(), "".into()),
            ],
            ..Default::default()
        })
        .unwrap();
        let connection = kedai::platform::db::connect(&settings.database)
            .await
            .unwrap();
        kedai::platform::db::migrate(&connection).await.unwrap();
        kedai::catalog::Catalog::seed_demo_if_empty(&connection)
            .await
            .unwrap();
        let writer = kedai::platform::db::Writer::new(connection);
        let order =
            crate::shop::paid_order(&writer, &crate::shop::Buyer::opted_in("+60123450000"), 2)
                .await;
        let bus = kedai::app::standard_bus(&settings, &writer).unwrap();
        kedai::events::Dispatcher::new(writer, bus, settings.events.clone())
            .drain()
            .await
            .unwrap();
        order
    });
    let run = |args: &[&str]| {
        let output = kedai(dir.path()).args(args).output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };

    let (ok, stats, err) = run(&["events", "stats", "--json"]);
    assert!(ok, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let logistics = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["handler"] == "logistics")
        .unwrap();
    assert_eq!(
        (logistics["done"].as_i64(), logistics["dead"].as_i64()),
        (Some(1), Some(0))
    );

    let (ok, out, err) = run(&[
        "shipments",
        "mark",
        &order,
        "shipped",
        "--tracking",
        "EP1MY",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("pending -> in_transit"), "{out}");
    // Moving it back is refused, with the reason.
    let (ok, _, err) = run(&["shipments", "mark", &order, "pending"]);
    assert!(!ok);
    assert!(err.contains("cannot become"), "{err}");
    let (ok, _, err) = run(&["shipments", "mark", &order, "lost"]);
    assert!(!ok);
    assert!(err.contains("status must be"), "{err}");

    let (ok, out, err) = run(&[
        "events",
        "list",
        "--json",
        "--type",
        "shipment.status_changed",
    ]);
    assert!(ok, "{err}");
    let events: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(events.as_array().unwrap().len(), 1);
    assert_eq!(events[0]["payload"]["status"], "in_transit");
    assert_eq!(events[0]["payload"]["tracking_number"], "EP1MY");

    let (ok, out, err) = run(&["analytics", "daily", "--json"]);
    assert!(ok, "{err}");
    let days: serde_json::Value = serde_json::from_str(&out).unwrap();
    let orders: i64 = days
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["orders"].as_i64().unwrap())
        .sum();
    assert_eq!(orders, 1);

    let (ok, out, _) = run(&["events", "dead"]);
    assert!(ok);
    assert!(out.contains("no dead letters"), "{out}");
    let (ok, _, err) = run(&["events", "replay", "999"]);
    assert!(!ok);
    assert!(err.contains("no dead letter #999"), "{err}");
}
