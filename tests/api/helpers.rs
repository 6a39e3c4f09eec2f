//! Boots the real application on port 0 against a fresh database per test:
//! a temporary SQLite file, or a new PostgreSQL database when
//! `KEDAI_TEST_DATABASE_URL` is set (dropped again when the test ends).

use std::path::PathBuf;

use kedai::app::{AppContext, Application};
use kedai::config::{ConfigSources, Settings};
use sea_orm::{ConnectionTrait, Database};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where a test's database lives; cleaned up on drop.
pub enum TestDatabase {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
        files: tempfile::TempDir,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
        files: tempfile::TempDir,
    },
}

impl TestDatabase {
    /// A fresh, empty database, or `None` (with the reason printed) when the
    /// backend is not available here. With `CI=true` a missing backend fails.
    pub async fn create(backend: Backend) -> Option<TestDatabase> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temp dir");
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("kedai.db").display()
                );
                Some(TestDatabase::Sqlite {
                    _dir: dir,
                    url,
                    files: tempfile::tempdir().expect("a temp dir"),
                })
            }
            Backend::Postgres => {
                let admin_url = service_url("KEDAI_TEST_DATABASE_URL")?;
                let name = format!("kedai_test_{}", uuid::Uuid::now_v7().simple());
                let admin = Database::connect(&admin_url)
                    .await
                    .expect("KEDAI_TEST_DATABASE_URL must reach PostgreSQL");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create a test database");
                let _ = admin.close().await;
                let url = replace_database_name(&admin_url, &name);
                Some(TestDatabase::Postgres {
                    admin_url,
                    name,
                    url,
                    files: tempfile::tempdir().expect("a temp dir"),
                })
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDatabase::Sqlite { url, .. } | TestDatabase::Postgres { url, .. } => url,
        }
    }

    /// A folder for the deployment's files: the document store
    /// (`kb/`) and the embedded vector index (`vectors/`).
    pub fn files(&self) -> &std::path::Path {
        match self {
            TestDatabase::Sqlite { files, .. } | TestDatabase::Postgres { files, .. } => {
                files.path()
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            TestDatabase::Sqlite { .. } => "sqlite",
            TestDatabase::Postgres { .. } => "postgres",
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let TestDatabase::Postgres {
            admin_url, name, ..
        } = self
        {
            let admin_url = admin_url.clone();
            let name = name.clone();
            // Drop runs inside the test's runtime; use a thread with its own.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    if let Ok(admin) = Database::connect(&admin_url).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .await;
                        let _ = admin.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// Reads a service URL for tests. Unset: prints why the test is skipped and
/// returns `None`, unless `CI=true`, where a missing service is a failure.
pub fn service_url(variable: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{variable} is not set, and CI=true requires every service");
            }
            eprintln!("skipped: {variable} is not set");
            None
        }
    }
}

fn replace_database_name(url: &str, name: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("KEDAI_TEST_DATABASE_URL is a URL");
    parsed.set_path(&format!("/{name}"));
    parsed.to_string()
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub context: AppContext,
    pub database: std::sync::Arc<TestDatabase>,
}

/// Test settings: the compiled-in defaults plus these overrides. The process
/// environment is not read, so parallel tests cannot disturb each other.
pub fn settings(database: &TestDatabase, extra: &[(&str, &str)]) -> Settings {
    let mut overrides: Vec<(String, String)> = vec![
        ("server.bind".into(), "127.0.0.1:0".into()),
        ("server.workers".into(), "2".into()),
        ("server.access_log".into(), "false".into()),
        ("server.shutdown_grace".into(), "2s".into()),
        ("database.kind".into(), database.kind().into()),
        ("database.url".into(), database.url().into()),
        ("database.max_connections".into(), "5".into()),
        ("catalog.refresh_interval".into(), "100ms".into()),
        // Tests step the event dispatcher themselves (`dispatcher.drain()`),
        // and must not depend on the time of day.
        ("events.enabled".into(), "false".into()),
        ("notify.quiet_hours".into(), "".into()),
        // Each test's own document store and vector index; the knowledge
        // tests ingest on purpose, the others need not spend the time.
        (
            "objects.path".into(),
            database.files().join("kb").display().to_string(),
        ),
        (
            "vectors.path".into(),
            database.files().join("vectors").display().to_string(),
        ),
        ("knowledge.ingest_on_start".into(), "false".into()),
        (
            "twilio.embedded_token_file".into(),
            database
                .files()
                .join("twilio-auth-token")
                .display()
                .to_string(),
        ),
        // Tests step the assistant themselves (`chat.drain()`).
        ("chat.enabled".into(), "false".into()),
        // … and the alert rules (`alerting.evaluate_once()`).
        ("alerts.enabled".into(), "false".into()),
        ("chat.burst_window".into(), "0s".into()),
    ];
    overrides.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Settings::load(&ConfigSources {
        overrides,
        ..ConfigSources::default()
    })
    .expect("test settings are valid")
}

/// Starts an app on a fresh database. `None` when the backend is not available.
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, &[]).await
}

pub async fn spawn_app_with(backend: Backend, extra: &[(&str, &str)]) -> Option<TestApp> {
    let database = std::sync::Arc::new(TestDatabase::create(backend).await?);
    Some(spawn_on(database, extra).await)
}

/// Starts another app (a replica) on an existing test database.
pub async fn spawn_on(database: std::sync::Arc<TestDatabase>, extra: &[(&str, &str)]) -> TestApp {
    let app = Application::build(settings(&database, extra))
        .await
        .expect("the application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let context = app.context().clone();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    TestApp {
        address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client"),
        context,
        database,
    }
}

impl TestApp {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{}", self.address, path))
            .send()
            .await
            .expect("request sent")
    }

    /// GETs a page and returns its status and body.
    pub async fn page(&self, path: &str) -> (u16, String) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        (status, response.text().await.expect("a body"))
    }
}

/// The `name=value` of the visitor cookie a response sets, for a `Cookie` header.
pub fn visitor_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("kedai_visitor="))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

/// Texts between `start` and the next `end` in `html`, in order.
pub fn between<'a>(html: &'a str, start: &str, end: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(index) = rest.find(start) {
        rest = &rest[index + start.len()..];
        let Some(stop) = rest.find(end) else { break };
        out.push(&rest[..stop]);
        rest = &rest[stop..];
    }
    out
}

/// Names on the product cards of a listing page.
pub fn card_names(html: &str) -> Vec<String> {
    between(html, "class=\"product-card-name\">", "<")
        .into_iter()
        .map(unescape)
        .collect()
}

/// Undoes askama's HTML escaping of `&`, `'`, `"`, `<` and `>`.
pub fn unescape(text: &str) -> String {
    text.replace("&#39;", "'")
        .replace("&#34;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

/// Prices on the product cards, in sen (the lowest when "From RM …").
pub fn card_prices(html: &str) -> Vec<i64> {
    between(html, "class=\"product-card-price\">", "<")
        .into_iter()
        .map(|label| {
            let digits: String = label.chars().filter(char::is_ascii_digit).collect();
            digits.parse().expect("a price")
        })
        .collect()
}

/// Where browser screenshots and other artifacts go: `target/test-artifacts`.
pub fn artifacts_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create the artifacts folder");
    dir
}

/// Runs each named test (an `async fn(TestApp)`) once on SQLite and once on
/// PostgreSQL, as `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let app = $crate::helpers::spawn_app($crate::helpers::Backend::Sqlite)
                        .await
                        .expect("SQLite is always available");
                    super::$name(app).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(app) = $crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await else {
                        return;
                    };
                    super::$name(app).await;
                }
            )*
        }
    };
}

/// A browser: its visitor cookie, the CSRF token of its visitor, and the
/// session cookie it collects (`kedai_session` for shoppers, `kedai_admin`
/// for the back-office).
pub struct Browser {
    pub visitor: String,
    pub session: Option<String>,
    pub csrf: String,
    session_cookie: &'static str,
}

impl Browser {
    /// Opens `path` (a page with a form) to get a visitor and its token.
    pub async fn open_at(app: &TestApp, path: &str, session_cookie: &'static str) -> Browser {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let visitor = visitor_cookie(&response).unwrap();
        let html = response.text().await.unwrap();
        let csrf = between(&html, "name=\"csrf_token\" value=\"", "\"")[0].to_string();
        Browser {
            visitor,
            session: None,
            csrf,
            session_cookie,
        }
    }

    pub fn cookies(&self) -> String {
        match &self.session {
            Some(session) => format!("{}; {session}", self.visitor),
            None => self.visitor.clone(),
        }
    }

    pub async fn get(&self, app: &TestApp, path: &str) -> reqwest::Response {
        app.client
            .get(format!("{}{path}", app.address))
            .header("Cookie", self.cookies())
            .send()
            .await
            .unwrap()
    }

    /// Posts a form with `csrf` as its token; keeps the session cookie the
    /// answer sets (or removes).
    pub async fn post_with(
        &mut self,
        app: &TestApp,
        path: &str,
        csrf: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut fields: Vec<(&str, &str)> = vec![("csrf_token", csrf)];
        fields.extend_from_slice(form);
        let response = app
            .client
            .post(format!("{}{path}", app.address))
            .header("Cookie", self.cookies())
            .form(&fields)
            .send()
            .await
            .unwrap();
        let prefix = format!("{}=", self.session_cookie);
        for value in response.headers().get_all("set-cookie") {
            let value = value.to_str().unwrap();
            if let Some(rest) = value.strip_prefix(prefix.as_str()) {
                let pair = value.split(';').next().unwrap().to_string();
                self.session = if rest.starts_with(';') || rest.is_empty() {
                    None
                } else {
                    Some(pair)
                };
            }
        }
        response
    }

    /// Posts a form with the browser's own CSRF token.
    pub async fn post(
        &mut self,
        app: &TestApp,
        path: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let csrf = self.csrf.clone();
        self.post_with(app, path, &csrf, form).await
    }
}
