//! The operator subcommands of the `kedai` binary (`events`, `shipments`,
//! `analytics`): each connects, migrates, calls the module API and prints a
//! table or JSON. Replays only schedule deliveries; a running server's
//! dispatcher (any replica) delivers them.

use anyhow::{Context, bail};
use sea_orm::DatabaseConnection;
use time::format_description::well_known::Rfc3339;

use crate::cli::{
    AdminCommand, AnalyticsCommand, ChatCommand, EventsCommand, KbCommand, ShipmentsCommand,
};
use crate::config::Settings;
use crate::events::{self, DeliveryFilter, DeliveryStatus, EventFilter};
use crate::logistics::{self, MarkOutcome, ShipmentRef, ShipmentStatus};
use crate::platform::db::{self, Writer};

async fn open(settings: &Settings) -> anyhow::Result<DatabaseConnection> {
    let connection = db::connect(&settings.database).await?;
    db::migrate(&connection).await?;
    Ok(connection)
}

fn when(at: time::OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

fn time_arg(name: &str, raw: &str) -> anyhow::Result<time::OffsetDateTime> {
    time::OffsetDateTime::parse(raw, &Rfc3339)
        .with_context(|| format!("--{name} must be an RFC 3339 time such as 2026-11-24T00:00:00Z"))
}

/// Prints rows as one JSON array, or a line each, or `empty` when none.
fn print_rows<T: serde::Serialize>(
    json: bool,
    rows: &[T],
    empty: &str,
    line: impl Fn(&T) -> String,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = if json {
        writeln!(out, "{}", serde_json::to_string_pretty(rows)?)
    } else if rows.is_empty() {
        writeln!(out, "{empty}")
    } else {
        rows.iter()
            .try_for_each(|row| writeln!(out, "{}", line(row)))
    };
    match written {
        // `kedai … | head` closing the pipe early is not an error.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub async fn events(settings: &Settings, command: EventsCommand) -> anyhow::Result<()> {
    let connection = open(settings).await?;
    let writer = Writer::new(connection.clone());
    match command {
        EventsCommand::List {
            event_type,
            limit,
            json,
        } => {
            let filter = EventFilter {
                event_type,
                limit,
                ..EventFilter::default()
            };
            let list = events::list_events(&connection, &filter).await?;
            print_rows(json, &list, "no events", |view| {
                let deliveries: Vec<String> = view
                    .deliveries
                    .iter()
                    .map(|d| format!("{}={}", d.handler, d.status))
                    .collect();
                let deliveries = match (deliveries.is_empty(), view.routed_at) {
                    (false, _) => deliveries.join(" "),
                    (true, Some(_)) => "(no handler matched)".to_string(),
                    (true, None) => "(not routed yet)".to_string(),
                };
                format!(
                    "{}  {:<24} {}  {deliveries}",
                    when(view.event.occurred_at),
                    view.event.event_type,
                    view.event.id
                )
            })?;
        }
        EventsCommand::Stats { json } => {
            let bus = crate::app::standard_bus(settings, &writer)?;
            let stats = events::delivery_stats(&connection, &bus.handler_names()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                println!(
                    "{:<16} {:>8} {:>8} {:>8} {:>8}  oldest pending",
                    "handler", "pending", "running", "done", "dead"
                );
                for s in &stats {
                    println!(
                        "{:<16} {:>8} {:>8} {:>8} {:>8}  {}",
                        s.handler,
                        s.pending,
                        s.running,
                        s.done,
                        s.dead,
                        s.oldest_pending_at.map(when).unwrap_or_else(|| "-".into())
                    );
                }
            }
        }
        EventsCommand::Dead {
            handler,
            limit,
            json,
        } => {
            let filter = DeliveryFilter {
                handler,
                status: Some(DeliveryStatus::Dead),
                limit,
            };
            let dead = events::list_deliveries(&connection, &filter).await?;
            print_rows(json, &dead, "no dead letters", |d| {
                format!(
                    "#{:<6} {}  {:<10} {:<24} attempts={} {}",
                    d.id,
                    when(d.updated_at),
                    d.handler,
                    d.event_type.as_deref().unwrap_or("?"),
                    d.attempts,
                    d.last_error.as_deref().unwrap_or("")
                )
            })?;
        }
        EventsCommand::Replay { delivery } => {
            if !events::replay_delivery(&writer, delivery).await? {
                bail!("there is no dead letter #{delivery}");
            }
            println!("dead letter #{delivery} scheduled again");
        }
        EventsCommand::ReplayDead { handler } => {
            let count = events::replay_dead(&writer, &handler).await?;
            println!("{count} dead letters of {handler} scheduled again");
        }
        EventsCommand::ReplayRange { handler, from, to } => {
            let bus = crate::app::standard_bus(settings, &writer)?;
            let count = events::replay_range(
                &writer,
                &bus,
                &handler,
                time_arg("from", &from)?,
                time_arg("to", &to)?,
            )
            .await?;
            println!("{count} deliveries to {handler} scheduled");
        }
    }
    Ok(())
}

pub async fn shipments(settings: &Settings, command: ShipmentsCommand) -> anyhow::Result<()> {
    let connection = open(settings).await?;
    let writer = Writer::new(connection);
    match command {
        ShipmentsCommand::Mark {
            order,
            status,
            tracking,
            detail,
        } => {
            let Some(to) = ShipmentStatus::parse(&status) else {
                bail!("status must be shipped, out-for-delivery, delivered or exception");
            };
            match logistics::mark(
                &writer,
                ShipmentRef::Order(&order),
                to,
                tracking.as_deref(),
                detail.as_deref(),
                None,
            )
            .await?
            {
                MarkOutcome::Changed { from, to } => {
                    println!("shipment of order {order}: {from} -> {to}")
                }
                MarkOutcome::Unchanged { current } => {
                    bail!("the shipment of order {order} is {current} and cannot become {to}")
                }
                MarkOutcome::NoShipment | MarkOutcome::Duplicate => {
                    bail!("order {order} has no shipment (is it paid?)")
                }
            }
        }
    }
    Ok(())
}

pub async fn analytics(settings: &Settings, command: AnalyticsCommand) -> anyhow::Result<()> {
    let connection = open(settings).await?;
    let format = time::macros::format_description!("[year]-[month]-[day]");
    match command {
        AnalyticsCommand::Daily { from, to, json } => {
            let to = match to {
                Some(raw) => time::Date::parse(&raw, &format).context("--to must be YYYY-MM-DD")?,
                None => crate::analytics::today(settings.shop.offset()),
            };
            let from = match from {
                Some(raw) => {
                    time::Date::parse(&raw, &format).context("--from must be YYYY-MM-DD")?
                }
                None => to - time::Duration::days(6),
            };
            let days = crate::analytics::daily(&connection, from, to).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&days)?);
            } else {
                println!(
                    "{:<10} {:>7} {:>7} {:>14} {:>9} {:>9}",
                    "day", "orders", "units", "revenue", "shipped", "refunded"
                );
                for d in &days {
                    let revenue: Vec<String> = d
                        .revenue_minor
                        .iter()
                        .map(|(c, v)| format!("{c} {}.{:02}", v / 100, v % 100))
                        .collect();
                    println!(
                        "{:<10} {:>7} {:>7} {:>14} {:>9} {:>9}",
                        d.day,
                        d.orders,
                        d.units,
                        if revenue.is_empty() {
                            "-".into()
                        } else {
                            revenue.join(", ")
                        },
                        d.shipments,
                        d.payment_outcomes.get("refunded").copied().unwrap_or(0)
                    );
                }
            }
        }
    }
    Ok(())
}

/// The knowledge base of a command-line run: the catalog is loaded so its
/// products are ingested too.
async fn knowledge(settings: &Settings) -> anyhow::Result<crate::knowledge::Knowledge> {
    let connection = open(settings).await?;
    let catalog =
        crate::catalog::Catalog::load(connection.clone(), settings.catalog.clone()).await?;
    crate::knowledge::Knowledge::from_settings(
        settings,
        connection.clone(),
        Writer::new(connection),
        Some(catalog),
        &crate::platform::upstream::UpstreamSignals::default(),
    )
    .await
}

pub async fn kb(settings: &Settings, command: KbCommand) -> anyhow::Result<()> {
    use crate::knowledge::{Mode, Scope, eval};
    match command {
        KbCommand::Ingest { path, all: _, json } => {
            let knowledge = knowledge(settings).await?;
            let scope = path.map_or(Scope::All, Scope::Prefix);
            let bar = (!json).then(|| {
                let bar = indicatif::ProgressBar::new(0);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar
            });
            let report = knowledge.sync(scope, bar.as_ref()).await?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} added, {} updated, {} deleted, {} unchanged, {} failed; {} passages written in {:.1}s ({})",
                    report.added,
                    report.updated,
                    report.deleted,
                    report.unchanged,
                    report.failed.len(),
                    report.passages,
                    report.seconds,
                    knowledge.embedder().name(),
                );
                for (key, status, reason) in &report.failed {
                    println!("  {status:<11} {key}: {reason}");
                }
            }
            if !report.failed.is_empty() {
                bail!("{} document(s) could not be indexed", report.failed.len());
            }
            Ok(())
        }
        KbCommand::Upload { file, key } => {
            let knowledge = knowledge(settings).await?;
            let key = match key {
                Some(key) => key,
                None => file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("the file has no usable name; pass --key")?
                    .to_string(),
            };
            let bytes = std::fs::read(&file)
                .with_context(|| format!("could not read {}", file.display()))?;
            knowledge.store().put(&key, bytes.into()).await?;
            let report = knowledge.sync(Scope::Exact(key.clone()), None).await?;
            match report.failed.first() {
                Some((_, status, reason)) => {
                    bail!("{key} stored but not indexed ({status}): {reason}")
                }
                None => println!("{key}: {} passages", report.passages),
            }
            Ok(())
        }
        KbCommand::Documents { json } => {
            let connection = open(settings).await?;
            let documents = crate::knowledge::repo::documents(&connection).await?;
            print_rows(json, &documents, "no documents ingested yet", |d| {
                format!(
                    "{:<10} {:>4} passages  {:<8} {:<3} {}{}",
                    d.status,
                    d.chunks,
                    d.kind,
                    d.language,
                    d.key,
                    d.error
                        .as_deref()
                        .map(|e| format!("  ({e})"))
                        .unwrap_or_default()
                )
            })
        }
        KbCommand::Search {
            query,
            k,
            mode,
            kind,
            language,
            json,
        } => {
            let knowledge = knowledge(settings).await?;
            knowledge.refresh().await?;
            let filter = crate::platform::vectors::VectorFilter {
                kind,
                language,
                ..Default::default()
            };
            let passages = knowledge.search_with(&query, &filter, k, mode).await?;
            print_rows(json, &passages, "nothing found", |p| {
                let mut section = p.section.join(" › ");
                if section.is_empty() {
                    section = p.title.clone();
                }
                let text: String = p.text.chars().take(240).collect();
                format!(
                    "{:.4} [{}] {} — {}\n        {}",
                    p.score,
                    p.citation,
                    p.document,
                    section,
                    text.replace('\n', " ")
                )
            })
        }
        KbCommand::Eval {
            beir,
            run_file,
            run_mode,
            misses,
            split,
            without_concepts,
            json,
        } => {
            let set = eval::BeirSet::load(&beir)?;
            let embedder: std::sync::Arc<dyn crate::platform::embed::Embedder> = if without_concepts
            {
                std::sync::Arc::new(crate::platform::embed::HashingEmbedder::without_concepts(
                    settings.embeddings.local_dimensions as usize,
                ))
            } else {
                crate::knowledge::embedder(
                    settings,
                    &crate::platform::upstream::UpstreamSignals::default(),
                )
                .await?
            };
            let name = embedder.name();
            let evaluation = eval::Evaluation::ingest(&set, embedder, &settings.knowledge).await?;
            let mut results = Vec::new();
            for mode in [Mode::Keyword, Mode::Vector, Mode::Hybrid] {
                let mut run = match (&run_file, mode == run_mode) {
                    (Some(path), true) => Some(std::io::BufWriter::new(
                        std::fs::File::create(path)
                            .with_context(|| format!("could not write {}", path.display()))?,
                    )),
                    _ => None,
                };
                let scores = evaluation
                    .score(
                        &set,
                        mode,
                        split,
                        run.as_mut().map(|w| w as &mut dyn std::io::Write),
                    )
                    .await?;
                if let Some(mut run) = run {
                    std::io::Write::flush(&mut run)?;
                }
                results.push(scores);
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "embedder": name,
                        "documents": set.corpus.len(),
                        "passages": evaluation.passages,
                        "queries": results.first().map_or(0, |r| r.queries),
                        "results": results,
                    }))?
                );
                return Ok(());
            }
            println!(
                "{} documents, {} passages, {} labelled queries; embedder {name}; ingested in {:.2}s",
                set.corpus.len(),
                evaluation.passages,
                results.first().map_or(0, |r| r.queries),
                evaluation.ingest_seconds
            );
            println!(
                "{:<8} {:>9} {:>9} {:>10} {:>7}",
                "mode", "recall@1", "recall@5", "recall@10", "MRR@10"
            );
            for r in &results {
                println!(
                    "{:<8} {:>9.3} {:>9.3} {:>10.3} {:>7.3}",
                    serde_json::to_value(r.mode)?.as_str().unwrap_or("?"),
                    r.recall_1,
                    r.recall_5,
                    r.recall_10,
                    r.mrr_10
                );
            }
            if misses {
                let texts: std::collections::HashMap<&str, &str> = set
                    .queries
                    .iter()
                    .map(|(i, t)| (i.as_str(), t.as_str()))
                    .collect();
                for r in &results {
                    println!("\nmissed in the top 5 by {:?}:", r.mode.unwrap_or_default());
                    for id in &r.misses_at_5 {
                        println!("  {id}: {}", texts.get(id.as_str()).unwrap_or(&""));
                    }
                }
            }
            Ok(())
        }
    }
}

pub async fn chat(settings: &Settings, command: ChatCommand) -> anyhow::Result<()> {
    use crate::chat::store::{self, State, conversation};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    match command {
        ChatCommand::Send {
            from,
            name,
            server,
            wait,
            text,
        } => {
            let from = crate::customers::normalise_phone(&from).unwrap_or(from);
            let public = settings.server.public_url.as_str().trim_end_matches('/');
            let signed_url = format!("{public}{}", crate::chat::webhook::INBOUND_PATH);
            let target = match server {
                Some(server) => format!(
                    "{}{}",
                    server.trim_end_matches('/'),
                    crate::chat::webhook::INBOUND_PATH
                ),
                None => signed_url.clone(),
            };
            let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
            let params: Vec<(String, String)> = vec![
                ("MessageSid".into(), sid.clone()),
                ("From".into(), format!("whatsapp:{from}")),
                (
                    "To".into(),
                    format!(
                        "whatsapp:{}",
                        settings.twilio.from.trim_start_matches("whatsapp:")
                    ),
                ),
                ("Body".into(), text),
                ("ProfileName".into(), name),
                ("WaId".into(), from.trim_start_matches('+').to_string()),
                ("NumMedia".into(), "0".into()),
            ];
            let token = crate::app::twilio_tokens(settings)
                .into_iter()
                .next()
                .context("no Twilio auth token")?;
            let signature = crate::platform::messaging::twilio::sign(&token, &signed_url, &params);
            let response = reqwest::Client::new()
                .post(&target)
                .header("X-Twilio-Signature", signature)
                .form(&params)
                .send()
                .await
                .with_context(|| format!("could not reach the server at {target} (is `kedai serve` running? --server sets where)"))?;
            let status = response.status();
            if !status.is_success() {
                bail!(
                    "the server answered {status}: {}",
                    response.text().await.unwrap_or_default()
                );
            }
            println!("sent {sid} from {from} ({status})");
            if wait == 0 {
                return Ok(());
            }
            let connection = open(settings).await?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
            loop {
                let reply_id = crate::chat::store::message::Entity::find()
                    .filter(crate::chat::store::message::Column::MessageSid.eq(sid.as_str()))
                    .one(&connection)
                    .await?
                    .and_then(|m| m.reply_to);
                if let Some(reply_id) = reply_id {
                    let reply = crate::chat::store::message::Entity::find_by_id(reply_id)
                        .one(&connection)
                        .await?
                        .context("the reply vanished")?;
                    println!("assistant ({}):\n{}", reply.status, reply.body);
                    return Ok(());
                }
                if std::time::Instant::now() > deadline {
                    println!(
                        "no reply within {wait}s (a person may be handling the conversation: `kedai chat show {from}`)"
                    );
                    return Ok(());
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
        ChatCommand::Show { from, limit } => {
            let connection = open(settings).await?;
            let identity = crate::customers::normalise_phone(&from).unwrap_or(from);
            let Some(conv) = conversation::Entity::find()
                .filter(conversation::Column::Identity.eq(identity.as_str()))
                .one(&connection)
                .await?
            else {
                bail!("no conversation with {identity}");
            };
            println!(
                "conversation {} with {identity} ({}), state {}{}",
                conv.id,
                conv.profile_name.as_deref().unwrap_or("no name"),
                conv.state,
                conv.handled_by
                    .as_deref()
                    .map(|by| format!(", handled by {by}"))
                    .unwrap_or_default()
            );
            let messages = store::messages(&connection, conv.id, limit).await?;
            print_rows(false, &messages, "no messages", |m| {
                format!(
                    "{}  {:<9} {:<8} {:<10} {}",
                    when(m.created_at),
                    m.role,
                    m.kind,
                    m.status,
                    m.body.replace('\n', "\n    ")
                )
            })
        }
        ChatCommand::List { state, limit } => {
            let connection = open(settings).await?;
            let state = match state.as_deref() {
                None => None,
                Some(raw) => {
                    Some(State::parse(raw).context("--state must be bot, needs_human or human")?)
                }
            };
            let inbox = state.map_or(store::Inbox::All, store::Inbox::In);
            let rows = store::list(&connection, &inbox, limit).await?;
            print_rows(false, &rows, "no conversations", |c| {
                format!(
                    "{}  {:<5} {:<16} {:<12} {}",
                    when(c.last_message_at),
                    c.id,
                    c.identity,
                    c.state,
                    c.profile_name.as_deref().unwrap_or("")
                )
            })
        }
        ChatCommand::Missing { limit } => {
            let connection = open(settings).await?;
            let rows = store::missing_knowledge(&connection, limit).await?;
            print_rows(false, &rows, "no missing knowledge", |m| {
                format!(
                    "{}  conversation {:<5} best {:.2}  {}",
                    when(m.created_at),
                    m.conversation_id,
                    m.best_score.unwrap_or(0.0),
                    m.question.replace('\n', " / ")
                )
            })
        }
    }
}

pub async fn admin(settings: &Settings, command: AdminCommand) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal};
    match command {
        AdminCommand::Create { email, role, name } => {
            let role = crate::admin::Role::parse(&role)
                .context("--role must be owner, staff or support")?;
            let stdin = std::io::stdin();
            let (password, generated) = if stdin.is_terminal() {
                let generated = format!(
                    "{}-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..12],
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                );
                (generated, true)
            } else {
                let mut line = String::new();
                stdin.lock().read_line(&mut line)?;
                (line.trim_end_matches(['\r', '\n']).to_string(), false)
            };
            let connection = open(settings).await?;
            let writer = Writer::new(connection);
            let admin = crate::admin::create(&writer, &email, &name, role, &password)
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            println!(
                "created {} admin {} ({}), id {}",
                admin.role.as_str(),
                admin.email,
                admin.name,
                admin.id
            );
            if generated {
                println!("password (shown once): {password}");
            }
            Ok(())
        }
    }
}
