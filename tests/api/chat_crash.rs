//! Crash safety of the assistant with the real binary: SIGKILL a server
//! while it answers a burst of WhatsApp messages, start another, and count
//! what reached Twilio — every message answered, none twice. On PostgreSQL
//! two servers share the queue and one of them is killed half-way.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kedai::chat::store::message;
use kedai::platform::messaging::entity as outbound;
use kedai::platform::messaging::twilio;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter};
use secrecy::SecretString;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{Backend, TestDatabase};

const KEDAI: &str = env!("CARGO_BIN_EXE_kedai");
const PUBLIC: &str = "https://shop.example.com";
const AUTH_TOKEN: &str = "crash-test-auth-token";
const SHOPPERS: usize = 40;
const MESSAGES_EACH: usize = 2;

/// A Twilio Messages API that takes a while per message, so the burst
/// lasts long enough to be interrupted.
async fn slow_twilio() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(
            r"^/2010-04-01/Accounts/AC[0-9a-z]+/Messages\.json$",
        ))
        .respond_with(FakeTwilio::default())
        .mount(&server)
        .await;
    server
}

/// Answers like Twilio: a new `SM…` id per message, after a delay.
#[derive(Default)]
struct FakeTwilio {
    sent: std::sync::atomic::AtomicUsize,
}

impl wiremock::Respond for FakeTwilio {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let n = self.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ResponseTemplate::new(201)
            .set_delay(Duration::from_millis(40))
            .set_body_raw(
                format!(r#"{{"sid":"SM{n:032x}","status":"queued"}}"#),
                "application/json",
            )
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process, killed when the test ends, whatever happens.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        kill(&mut self.0);
    }
}

fn server(database_url: &str, twilio_url: &str, port: u16) -> Running {
    let mut command = Command::new(KEDAI);
    for (key, _) in std::env::vars() {
        if key.starts_with("KEDAI") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    let kind = if database_url.starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };
    command
        .arg("serve")
        .env("KEDAI__DATABASE__KIND", kind)
        .env("KEDAI__DATABASE__URL", database_url)
        .env("KEDAI__DATABASE__SEED_DEMO_ON_EMPTY", "false")
        .env("KEDAI__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("KEDAI__SERVER__PUBLIC_URL", PUBLIC)
        .env("KEDAI__SERVER__WORKERS", "1")
        .env("KEDAI__MESSAGING__KIND", "twilio")
        .env("KEDAI__TWILIO__API_BASE", twilio_url)
        .env(
            "KEDAI__TWILIO__ACCOUNT_SID",
            "AC0123456789abcdef0123456789abcdef",
        )
        .env("KEDAI__TWILIO__AUTH_TOKEN", AUTH_TOKEN)
        .env("KEDAI__TWILIO__FROM", "+14155238886")
        .env("KEDAI__CHAT__WORKERS", "4")
        .env("KEDAI__CHAT__BURST_WINDOW", "0s")
        .env("KEDAI__CHAT__GLOBAL_LIMIT", "100000")
        .env("KEDAI__QUEUE__VISIBILITY_TIMEOUT", "2s")
        .env("KEDAI__QUEUE__WAIT_TIME", "1s")
        .env("KEDAI__QUEUE__POLL_INTERVAL", "50ms")
        .env("KEDAI__QUEUE__MAX_RECEIVES", "50")
        .env("KEDAI__EVENTS__ENABLED", "false")
        .env("KEDAI__KNOWLEDGE__INGEST_ON_START", "false")
        .env("KEDAI__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Running)
        .expect("the kedai binary starts")
}

async fn wait_ready(client: &reqwest::Client, port: u16) {
    let started = Instant::now();
    loop {
        if let Ok(response) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && response.status() == 200
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kill(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn phone(i: usize) -> String {
    format!("+6013{:07}", 3_000_000 + i)
}

/// Posts every shopper's messages (questions answered from order data, so
/// no knowledge base is needed), spread over `ports`.
async fn post_all(client: &reqwest::Client, ports: &[u16]) {
    let token = SecretString::from(AUTH_TOKEN);
    let url = format!("{PUBLIC}/webhooks/twilio");
    let mut n = 0;
    for round in 0..MESSAGES_EACH {
        for shopper in 0..SHOPPERS {
            let from = phone(shopper);
            let params: Vec<(String, String)> = [
                ("MessageSid", format!("SMk{shopper}-{round}")),
                ("From", format!("whatsapp:{from}")),
                ("To", "whatsapp:+14155238886".into()),
                (
                    "Body",
                    if round == 0 {
                        "where is my order?".into()
                    } else {
                        "hi".to_string()
                    },
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            let signature = twilio::sign(&token, &url, &params);
            let port = ports[n % ports.len()];
            n += 1;
            let response = client
                .post(format!("http://127.0.0.1:{port}/webhooks/twilio"))
                .header("X-Twilio-Signature", signature)
                .form(&params)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    }
}

async fn waiting_or_pending(db: &DatabaseConnection) -> u64 {
    message::Entity::find()
        .filter(message::Column::Status.is_in(["received", "pending"]))
        .count(db)
        .await
        .unwrap()
}

/// Every shopper message answered; Twilio got one request per reply (a
/// reply whose send was interrupted is `unconfirmed` and never repeated,
/// so it may have reached Twilio once or not at all).
async fn assert_answered_exactly_once(db: &DatabaseConnection, twilio: &MockServer) {
    let users = message::Entity::find()
        .filter(message::Column::Role.eq("user"))
        .all(db)
        .await
        .unwrap();
    assert_eq!(users.len(), SHOPPERS * MESSAGES_EACH);
    for user in &users {
        assert_eq!(user.status, "answered", "{user:?}");
        assert!(user.reply_to.is_some());
    }
    let replies = message::Entity::find()
        .filter(message::Column::Role.eq("assistant"))
        .all(db)
        .await
        .unwrap();
    let answered: std::collections::HashSet<i64> =
        users.iter().filter_map(|u| u.reply_to).collect();
    assert_eq!(
        answered.len(),
        replies.len(),
        "no reply without a turn, no turn answered twice"
    );
    let rows = outbound::Entity::find().all(db).await.unwrap();
    assert_eq!(rows.len(), replies.len(), "one outbound message per reply");
    let mut requests: HashMap<String, usize> = HashMap::new();
    for request in twilio.received_requests().await.unwrap() {
        let form: HashMap<String, String> = url::form_urlencoded::parse(&request.body)
            .into_owned()
            .collect();
        *requests
            .entry(form["To"].trim_start_matches("whatsapp:").to_string())
            .or_default() += 1;
    }
    for shopper in 0..SHOPPERS {
        let to = phone(shopper);
        let mine: Vec<&outbound::Model> = rows.iter().filter(|r| r.recipient == to).collect();
        let unconfirmed = mine.iter().filter(|r| r.status == "unconfirmed").count();
        let got = requests.get(&to).copied().unwrap_or(0);
        assert!(
            got <= mine.len() && got + unconfirmed >= mine.len(),
            "{to}: Twilio got {got} messages for {} replies ({unconfirmed} unconfirmed)",
            mine.len()
        );
    }
}

async fn settle(db: &DatabaseConnection) {
    let started = Instant::now();
    loop {
        let users = message::Entity::find()
            .filter(message::Column::Role.eq("user"))
            .count(db)
            .await
            .unwrap();
        if users == (SHOPPERS * MESSAGES_EACH) as u64 && waiting_or_pending(db).await == 0 {
            return;
        }
        if started.elapsed() > Duration::from_secs(90) {
            use sea_orm::{ConnectionTrait, Statement};
            for sql in [
                "SELECT role, status, count(*) AS n FROM chat_messages GROUP BY role, status",
                "SELECT queue, receive_count, visible_at, receipt FROM queue_messages",
                "SELECT id, worker, worker_until, state FROM conversations WHERE worker IS NOT NULL",
            ] {
                let rows = db
                    .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
                    .await
                    .unwrap();
                eprintln!("{sql}: {rows:?}");
            }
            panic!("the messages were never all answered");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn connect(database: &TestDatabase) -> DatabaseConnection {
    let settings = crate::helpers::settings(database, &[]);
    let db = kedai::platform::db::connect(&settings.database)
        .await
        .unwrap();
    kedai::platform::db::migrate(&db).await.unwrap();
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_answering_answers_every_message_exactly_once() {
    let database = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let db = connect(&database).await;
    let twilio = slow_twilio().await;
    let client = reqwest::Client::new();

    let port = free_port();
    let mut first = server(database.url(), &twilio.uri(), port);
    wait_ready(&client, port).await;
    post_all(&client, &[port]).await;
    let started = Instant::now();
    while twilio.received_requests().await.unwrap().len() < 15 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first server never got going"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    kill(&mut first.0);
    assert!(
        waiting_or_pending(&db).await > 0,
        "the kill must land mid-burst"
    );

    let port = free_port();
    let mut second = server(database.url(), &twilio.uri(), port);
    settle(&db).await;
    kill(&mut second.0);
    assert_answered_exactly_once(&db, &twilio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_postgres_answer_every_message_exactly_once_when_one_dies() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let db = connect(&database).await;
    let twilio = slow_twilio().await;
    let client = reqwest::Client::new();

    let (port_a, port_b) = (free_port(), free_port());
    let mut first = server(database.url(), &twilio.uri(), port_a);
    let mut second = server(database.url(), &twilio.uri(), port_b);
    wait_ready(&client, port_a).await;
    wait_ready(&client, port_b).await;
    post_all(&client, &[port_a, port_b]).await;
    let started = Instant::now();
    while twilio.received_requests().await.unwrap().len() < 20 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    kill(&mut first.0);
    settle(&db).await;
    kill(&mut second.0);
    assert_answered_exactly_once(&db, &twilio).await;
}
