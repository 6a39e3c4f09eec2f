//! What the benchmarks share: a database of their own.

use sea_orm::{ConnectionTrait, Database};

/// A temporary SQLite file, or — with `KEDAI_BENCH_DATABASE_URL` — a new
/// PostgreSQL database next to that URL, dropped by [`BenchDatabase::drop`].
pub struct BenchDatabase {
    pub kind: &'static str,
    pub url: String,
    postgres: Option<(String, String)>,
    _temp: tempfile::TempDir,
}

impl BenchDatabase {
    pub async fn create() -> anyhow::Result<Self> {
        let temp = tempfile::tempdir()?;
        match std::env::var("KEDAI_BENCH_DATABASE_URL") {
            Ok(admin) if !admin.is_empty() => {
                let name = format!("kedai_bench_{}", uuid::Uuid::now_v7().simple());
                let connection = Database::connect(&admin).await?;
                connection
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await?;
                let mut url = url::Url::parse(&admin)?;
                url.set_path(&format!("/{name}"));
                Ok(BenchDatabase {
                    kind: "postgres",
                    url: url.to_string(),
                    postgres: Some((admin, name)),
                    _temp: temp,
                })
            }
            _ => Ok(BenchDatabase {
                kind: "sqlite",
                url: format!(
                    "sqlite://{}?mode=rwc",
                    temp.path().join("bench.db").display()
                ),
                postgres: None,
                _temp: temp,
            }),
        }
    }

    pub async fn drop(self) -> anyhow::Result<()> {
        if let Some((admin, name)) = self.postgres {
            let connection = Database::connect(&admin).await?;
            connection
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await?;
        }
        Ok(())
    }
}
