//! The WhatsApp assistant end to end on the embedded stack: signed
//! webhooks in, replies recorded in the outbox, on SQLite and PostgreSQL.

use std::time::Duration;

use kedai::chat::store::{conversation, message, missing};
use kedai::knowledge::Scope;
use kedai::platform::messaging::twilio;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, spawn_app_with};
use crate::shop::{Buyer, paid_order};

const TOKEN: &str = "chat-ops-token";
const PUBLIC: &str = "https://shop.example.com";
const AUTH_TOKEN: &str = "12345678901234567890123456789012";

/// An app whose messages are signed with a known auth token and public
/// URL, with the demo knowledge base ingested.
pub async fn chat_app(backend: Backend, extra: &[(&str, &str)]) -> Option<TestApp> {
    let mut settings = vec![
        ("server.public_url", PUBLIC),
        ("server.ops_api_token", TOKEN),
        ("twilio.auth_token", AUTH_TOKEN),
    ];
    settings.extend_from_slice(extra);
    let app = spawn_app_with(backend, &settings).await?;
    with_demo_knowledge(&app).await;
    Some(app)
}

/// Writes the demo knowledge base into the app's store, ingests it and
/// loads it, as a fresh install does at its first start.
pub async fn with_demo_knowledge(app: &TestApp) {
    let knowledge = &app.context.knowledge;
    knowledge.seed_demo_documents().await.unwrap();
    knowledge.sync(Scope::All, None).await.unwrap();
    knowledge.refresh().await.unwrap();
}

fn params(from: &str, body: &str, sid: &str) -> Vec<(String, String)> {
    [
        ("MessageSid", sid),
        ("SmsMessageSid", sid),
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("From", &format!("whatsapp:{from}")),
        ("To", "whatsapp:+14155238886"),
        ("Body", body),
        ("ProfileName", "Siti"),
        ("WaId", from.trim_start_matches('+')),
        ("NumMedia", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

async fn post(
    app: &TestApp,
    params: &[(String, String)],
    signature: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/webhooks/twilio", app.address))
        .form(params);
    if let Some(signature) = signature {
        request = request.header("X-Twilio-Signature", signature);
    }
    request.send().await.unwrap()
}

/// Posts a message signed as Twilio signs it; asserts the empty TwiML 200.
pub async fn whatsapp(app: &TestApp, from: &str, body: &str, sid: &str) {
    let params = params(from, body, sid);
    let signature = twilio::sign(
        &SecretString::from(AUTH_TOKEN),
        &format!("{PUBLIC}/webhooks/twilio"),
        &params,
    );
    let response = post(app, &params, Some(&signature)).await;
    assert_eq!(response.status(), 200, "{body}");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/xml")
    );
    assert_eq!(
        response.text().await.unwrap(),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>"
    );
}

/// Every WhatsApp message recorded for `phone` by the assistant and people.
async fn sent_to(app: &TestApp, phone: &str) -> Vec<kedai::platform::messaging::entity::Model> {
    use kedai::platform::messaging::entity as outbound;
    outbound::Entity::find()
        .filter(outbound::Column::Recipient.eq(phone))
        .filter(outbound::Column::Kind.is_in(["chat_reply", "chat_human"]))
        .order_by_asc(outbound::Column::Id)
        .all(&app.context.db)
        .await
        .unwrap()
}

async fn conversation_of(app: &TestApp, phone: &str) -> conversation::Model {
    conversation::Entity::find()
        .filter(conversation::Column::Identity.eq(phone))
        .one(&app.context.db)
        .await
        .unwrap()
        .expect("a conversation")
}

async fn messages_of(app: &TestApp, phone: &str) -> Vec<message::Model> {
    let conv = conversation_of(app, phone).await;
    message::Entity::find()
        .filter(message::Column::ConversationId.eq(conv.id))
        .order_by_asc(message::Column::Id)
        .all(&app.context.db)
        .await
        .unwrap()
}

async fn drain(app: &TestApp) {
    app.context.chat.drain(200).await.unwrap();
}

async fn ops(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}{path}", app.address))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

// ---------------------------------------------------------------------------

/// The signature over an inbound message, computed independently (Python's
/// hmac module: base64 HMAC-SHA1 of the URL followed by the sorted
/// name+value pairs, keyed with the auth token).
#[tokio::test]
async fn the_webhook_accepts_only_twilio_signed_requests() {
    let Some(app) = spawn_app_with(
        Backend::Sqlite,
        &[
            ("server.public_url", PUBLIC),
            ("twilio.auth_token", AUTH_TOKEN),
        ],
    )
    .await
    else {
        return;
    };
    let signed: Vec<(String, String)> = [
        ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
        ("From", "whatsapp:+60123456789"),
        ("To", "whatsapp:+14155238886"),
        ("Body", "Is the batik shirt available in XL?"),
        ("ProfileName", "Siti"),
        ("WaId", "60123456789"),
        ("NumMedia", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    const EXPECTED: &str = "H24YXnPO5GLJcsYIjkvEi4ap100=";
    assert_eq!(
        twilio::sign(
            &SecretString::from(AUTH_TOKEN),
            &format!("{PUBLIC}/webhooks/twilio"),
            &signed
        ),
        EXPECTED
    );

    let mut tampered = signed.clone();
    tampered[3].1 = "Is the batik shirt available in XXL?".into();
    let wrong_url = twilio::sign(
        &SecretString::from(AUTH_TOKEN),
        &format!("{}/webhooks/twilio", app.address),
        &signed,
    );
    let wrong_token = twilio::sign(
        &SecretString::from("another-token"),
        &format!("{PUBLIC}/webhooks/twilio"),
        &signed,
    );
    for (params, signature) in [
        (&signed, None),
        (&signed, Some("not base64!")),
        (&tampered, Some(EXPECTED)),
        (&signed, Some(wrong_url.as_str())),
        (&signed, Some(wrong_token.as_str())),
    ] {
        let response = post(&app, params, signature).await;
        assert_eq!(response.status(), 403, "{signature:?}");
        let text = response.text().await.unwrap();
        assert!(!text.contains("batik"), "the body is not echoed");
    }
    assert_eq!(
        message::Entity::find()
            .count(&app.context.db)
            .await
            .unwrap(),
        0
    );
    assert_eq!(app.context.queue.stats().await.unwrap().depth, 0);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("kedai_webhook_rejected_total{source=\"twilio_inbound\""),
        "counted"
    );

    let response = post(&app, &signed, Some(EXPECTED)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        message::Entity::find()
            .count(&app.context.db)
            .await
            .unwrap(),
        1
    );
    assert_eq!(app.context.queue.stats().await.unwrap().depth, 1);

    // Signed but not a WhatsApp message: 400, nothing stored.
    let mut sms = signed.clone();
    sms[0].1 = "SMother".into();
    sms[1].1 = "+60123456789".into();
    let signature = twilio::sign(
        &SecretString::from(AUTH_TOKEN),
        &format!("{PUBLIC}/webhooks/twilio"),
        &sms,
    );
    assert_eq!(post(&app, &sms, Some(&signature)).await.status(), 400);
    assert_eq!(
        message::Entity::find()
            .count(&app.context.db)
            .await
            .unwrap(),
        1
    );
}

async fn a_question_is_answered_once_with_citations(backend: Backend) {
    let Some(app) = chat_app(backend, &[]).await else {
        return;
    };
    let phone = "+60121110001";
    whatsapp(
        &app,
        phone,
        "how many days does delivery to sabah take?",
        "SMq1",
    )
    .await;
    // Twilio retries the same message: stored once, answered once.
    whatsapp(
        &app,
        phone,
        "how many days does delivery to sabah take?",
        "SMq1",
    )
    .await;
    drain(&app).await;
    whatsapp(
        &app,
        phone,
        "how many days does delivery to sabah take?",
        "SMq1",
    )
    .await;
    drain(&app).await;

    let sent = sent_to(&app, phone).await;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let reply = &sent[0].body;
    assert!(reply.contains("[kb:"), "cites its source: {reply}");
    assert!(reply.to_lowercase().contains("sabah"), "{reply}");
    let history = messages_of(&app, phone).await;
    assert_eq!(history.len(), 2, "{history:#?}");
    assert_eq!(history[0].role, "user");
    assert_eq!(history[0].status, "answered");
    assert_eq!(history[1].role, "assistant");
    assert_eq!(history[1].status, "sent");
    assert_eq!(history[0].reply_to, Some(history[1].id));
    let passages: Value = serde_json::from_str(history[1].passages.as_deref().unwrap()).unwrap();
    assert!(passages[0]["citation"].as_str().unwrap().starts_with("kb:"));
    assert!(reply.contains(passages[0]["citation"].as_str().unwrap()));
    assert_eq!(
        app.context.queue.stats().await.unwrap().depth,
        0,
        "the job was deleted"
    );

    // The inbox API shows the turn with its delivery status and passages.
    let response = app
        .client
        .get(format!(
            "{}/api/ops/chat/conversations/{}",
            app.address, history[0].conversation_id
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let detail: Value = response.json().await.unwrap();
    assert_eq!(detail["messages"][1]["delivery"], "recorded");
    assert!(detail["messages"][1]["passages"].is_array());
}

#[tokio::test]
async fn a_question_is_answered_once_with_citations_sqlite() {
    a_question_is_answered_once_with_citations(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_question_is_answered_once_with_citations_postgres() {
    a_question_is_answered_once_with_citations(Backend::Postgres).await;
}

#[tokio::test]
async fn over_the_rate_limit_messages_are_kept_but_not_answered_with_one_notice() {
    let Some(app) = chat_app(Backend::Sqlite, &[("chat.sender_limit", "2")]).await else {
        return;
    };
    let phone = "+60121110002";
    for i in 0..5 {
        whatsapp(
            &app,
            phone,
            &format!("how many days does delivery to sabah take? ({i})"),
            &format!("SMr{i}"),
        )
        .await;
    }
    drain(&app).await;
    let history = messages_of(&app, phone).await;
    let users: Vec<&message::Model> = history.iter().filter(|m| m.role == "user").collect();
    assert_eq!(users.len(), 5, "every message is kept");
    assert_eq!(users.iter().filter(|m| m.status == "limited").count(), 3);
    let notices: Vec<&message::Model> = history.iter().filter(|m| m.kind == "notice").collect();
    assert_eq!(notices.len(), 1, "one polite notice");
    let sent = sent_to(&app, phone).await;
    assert_eq!(
        sent.len(),
        2,
        "one answer (the two allowed merge into a turn) and the notice: {sent:#?}"
    );
    // Another shopper is not affected.
    whatsapp(
        &app,
        "+60121110003",
        "how many days does delivery to sabah take?",
        "SMr-other",
    )
    .await;
    drain(&app).await;
    assert_eq!(sent_to(&app, "+60121110003").await.len(), 1);
}

#[tokio::test]
async fn a_burst_is_answered_as_one_turn() {
    let Some(app) = chat_app(Backend::Sqlite, &[("chat.burst_window", "1500ms")]).await else {
        return;
    };
    let phone = "+60121110004";
    whatsapp(&app, phone, "hi", "SMb1").await;
    whatsapp(&app, phone, "I need help", "SMb2").await;
    whatsapp(&app, phone, "can I return a shirt I wore once?", "SMb3").await;
    // Nothing is answered inside the window.
    app.context.chat.try_process_once().await.unwrap();
    assert!(sent_to(&app, phone).await.is_empty());
    tokio::time::sleep(Duration::from_millis(1600)).await;
    drain(&app).await;
    let sent = sent_to(&app, phone).await;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let history = messages_of(&app, phone).await;
    let reply = history.iter().find(|m| m.role == "assistant").unwrap();
    for user in history.iter().filter(|m| m.role == "user") {
        assert_eq!(user.reply_to, Some(reply.id), "{}", user.body);
    }
}

async fn order_questions_are_answered_from_order_data(backend: Backend) {
    let Some(app) = chat_app(backend, &[]).await else {
        return;
    };
    let phone = "+60121110005";
    let order = paid_order(&app.context.writer, &Buyer::opted_in(phone), 1).await;
    let number: String = order.chars().take(8).collect();
    whatsapp(&app, phone, "where is my order?", "SMo1").await;
    drain(&app).await;
    let sent = sent_to(&app, phone).await;
    assert_eq!(sent.len(), 1);
    assert!(sent[0].body.contains(&number), "{}", sent[0].body);
    assert!(sent[0].body.contains("paid"), "{}", sent[0].body);

    // Someone else's order number is not found for this number.
    let stranger = paid_order(&app.context.writer, &Buyer::opted_in("+60121119999"), 1).await;
    let theirs: String = stranger.chars().take(8).collect();
    whatsapp(&app, phone, &format!("status of order {theirs}?"), "SMo2").await;
    drain(&app).await;
    let sent = sent_to(&app, phone).await;
    assert_eq!(sent.len(), 2);
    assert!(!sent[1].body.contains(&theirs), "{}", sent[1].body);
    assert!(sent[1].body.contains("can't find"), "{}", sent[1].body);

    // A shopper with no orders is told so, in Malay when they write Malay.
    whatsapp(
        &app,
        "+60121110006",
        "pesanan saya dah sampai ke belum?",
        "SMo3",
    )
    .await;
    drain(&app).await;
    let sent = sent_to(&app, "+60121110006").await;
    assert!(
        sent[0].body.contains("tidak menjumpai pesanan"),
        "{}",
        sent[0].body
    );
}

#[tokio::test]
async fn order_questions_are_answered_from_order_data_sqlite() {
    order_questions_are_answered_from_order_data(Backend::Sqlite).await;
}

#[tokio::test]
async fn order_questions_are_answered_from_order_data_postgres() {
    order_questions_are_answered_from_order_data(Backend::Postgres).await;
}

#[tokio::test]
async fn an_unanswerable_question_escalates_and_is_listed_as_missing_knowledge() {
    let Some(app) = chat_app(Backend::Sqlite, &[]).await else {
        return;
    };
    let phone = "+60121110007";
    whatsapp(&app, phone, "what is the capital of mongolia", "SMu1").await;
    drain(&app).await;
    let sent = sent_to(&app, phone).await;
    assert_eq!(sent.len(), 1);
    assert!(sent[0].body.contains("not sure"), "{}", sent[0].body);
    let conv = conversation_of(&app, phone).await;
    assert_eq!(conv.state, "needs_human");
    assert_eq!(conv.state_reason.as_deref(), Some("no_evidence"));
    let listed = missing::Entity::find().all(&app.context.db).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].question, "what is the capital of mongolia");
    // While it waits for a person the bot stays quiet.
    whatsapp(&app, phone, "hello??", "SMu2").await;
    drain(&app).await;
    assert_eq!(sent_to(&app, phone).await.len(), 1);
    let history = messages_of(&app, phone).await;
    assert_eq!(history.last().unwrap().status, "to_human");

    let response = app
        .client
        .get(format!("{}/api/ops/chat/missing-knowledge", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["missing_knowledge"][0]["question"],
        "what is the capital of mongolia"
    );

    // Asking for a person escalates too.
    whatsapp(&app, "+60121110008", "can I talk to a human please", "SMu3").await;
    drain(&app).await;
    let conv = conversation_of(&app, "+60121110008").await;
    assert_eq!(conv.state, "needs_human");
    assert_eq!(conv.state_reason.as_deref(), Some("asked_for_human"));
}

async fn a_taken_over_conversation_gets_no_bot_reply_until_released(backend: Backend) {
    let Some(app) = chat_app(backend, &[]).await else {
        return;
    };
    let phone = "+60121110009";
    whatsapp(&app, phone, "do you ship to singapore?", "SMt1").await;
    drain(&app).await;
    assert_eq!(sent_to(&app, phone).await.len(), 1);
    let id = conversation_of(&app, phone).await.id;

    let (status, _) = ops(
        &app,
        &format!("/api/ops/chat/conversations/{id}/takeover"),
        json!({"admin": "aisyah@shop"}),
    )
    .await;
    assert_eq!(status, 200);
    // Someone else cannot take it or release it meanwhile.
    let (status, _) = ops(
        &app,
        &format!("/api/ops/chat/conversations/{id}/takeover"),
        json!({"admin": "ben@shop"}),
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = ops(
        &app,
        &format!("/api/ops/chat/conversations/{id}/reply"),
        json!({"admin": "ben@shop", "text": "hi"}),
    )
    .await;
    assert_eq!(status, 409);

    whatsapp(&app, phone, "and how much is shipping there?", "SMt2").await;
    drain(&app).await;
    assert_eq!(sent_to(&app, phone).await.len(), 1, "the bot stayed silent");
    assert_eq!(
        messages_of(&app, phone).await.last().unwrap().status,
        "to_human"
    );

    let (status, body) = ops(
        &app,
        &format!("/api/ops/chat/conversations/{id}/reply"),
        json!({"admin": "aisyah@shop", "text": "Hi! Shipping to Singapore is RM 35, I'll send details."}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = sent_to(&app, phone).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].kind, "chat_human");
    assert!(sent[1].body.starts_with("Hi! Shipping to Singapore"));

    let (status, _) = ops(
        &app,
        &format!("/api/ops/chat/conversations/{id}/release"),
        json!({"admin": "aisyah@shop"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = ops(
        &app,
        &format!("/api/ops/chat/conversations/{id}/archive"),
        json!({"admin": "aisyah@shop"}),
    )
    .await;
    assert_eq!(status, 404, "no such action");
    whatsapp(&app, phone, "can I pay with FPX?", "SMt3").await;
    drain(&app).await;
    let sent = sent_to(&app, phone).await;
    assert_eq!(sent.len(), 3, "the bot answers again");
    let history = messages_of(&app, phone).await;
    let notes: Vec<&str> = history
        .iter()
        .filter(|m| m.role == "system")
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(
        notes,
        vec![
            "Taken over by aisyah@shop.",
            "Returned to the assistant by aisyah@shop."
        ]
    );
}

#[tokio::test]
async fn a_taken_over_conversation_gets_no_bot_reply_until_released_sqlite() {
    a_taken_over_conversation_gets_no_bot_reply_until_released(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_taken_over_conversation_gets_no_bot_reply_until_released_postgres() {
    a_taken_over_conversation_gets_no_bot_reply_until_released(Backend::Postgres).await;
}

#[tokio::test]
async fn an_idle_takeover_returns_to_the_bot() {
    let Some(app) = chat_app(Backend::Sqlite, &[("chat.handover_idle", "300ms")]).await else {
        return;
    };
    let phone = "+60121110010";
    whatsapp(&app, phone, "hello", "SMi1").await;
    drain(&app).await;
    let id = conversation_of(&app, phone).await.id;
    app.context.chat.take_over(id, "aisyah@shop").await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    whatsapp(&app, phone, "do you ship to singapore?", "SMi2").await;
    drain(&app).await;
    assert_eq!(
        sent_to(&app, phone).await.len(),
        2,
        "the bot answered after the lease ran out"
    );
    let history = messages_of(&app, phone).await;
    assert!(
        history
            .iter()
            .any(|m| m.role == "system" && m.body.contains("without activity"))
    );
}

/// Several shoppers write at once while two replicas' workers compete:
/// every message is answered once, and each conversation's replies follow
/// its messages in order.
async fn per_conversation_ordering_under_concurrency(backend: Backend) {
    // Which messages share a turn depends on timing; a merged text that
    // fell under the evidence gate would hand the conversation to people
    // and leave later messages unanswered by design. The gate has its own
    // test; here every turn passes it, so only ordering is under test.
    let gate_open = [
        ("chat.evidence_vector", "0"),
        ("chat.evidence_keyword", "0"),
    ];
    let Some(app) = chat_app(backend, &gate_open).await else {
        return;
    };
    let replica = crate::helpers::spawn_on(
        app.database.clone(),
        &[
            ("server.public_url", PUBLIC),
            ("twilio.auth_token", AUTH_TOKEN),
            gate_open[0],
            gate_open[1],
        ],
    )
    .await;
    replica.context.knowledge.refresh().await.unwrap();
    let phones: Vec<String> = (0..6).map(|i| format!("+6012555{i:04}")).collect();
    let questions = [
        "do you ship to sabah?",
        "can I pay by FPX",
        "do you ship to singapore?",
        "how do I wash the batik shirt",
        "do you have a size guide",
    ];
    let mut posts = Vec::new();
    for (p, phone) in phones.iter().enumerate() {
        for (q, question) in questions.iter().enumerate() {
            posts.push((phone.clone(), question.to_string(), format!("SMc{p}-{q}")));
        }
    }
    let sender = async {
        for (phone, question, sid) in &posts {
            whatsapp(&app, phone, question, sid).await;
        }
    };
    let workers = async {
        for _ in 0..400 {
            let (a, b) = tokio::join!(
                app.context.chat.try_process_once(),
                replica.context.chat.try_process_once()
            );
            a.unwrap();
            b.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::join!(sender, workers);
    app.context.chat.drain(200).await.unwrap();
    for phone in &phones {
        let history = messages_of(&app, phone).await;
        let users: Vec<&message::Model> = history.iter().filter(|m| m.role == "user").collect();
        assert_eq!(users.len(), questions.len());
        let mut last_reply = 0;
        for user in &users {
            assert_eq!(user.status, "answered", "{phone}: {}", user.body);
            let reply = user.reply_to.expect("answered by a reply");
            assert!(reply > user.id, "a reply comes after its question");
            assert!(reply >= last_reply, "{phone}: replies out of order");
            last_reply = reply;
        }
        let replies = history.iter().filter(|m| m.role == "assistant").count();
        let distinct: std::collections::HashSet<i64> =
            users.iter().filter_map(|u| u.reply_to).collect();
        assert_eq!(
            distinct.len(),
            replies,
            "{phone}: every reply answers a turn (none twice)"
        );
        assert_eq!(
            sent_to(&app, phone).await.len(),
            replies,
            "{phone}: one message per reply"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_conversation_ordering_under_concurrency_sqlite() {
    per_conversation_ordering_under_concurrency(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_conversation_ordering_under_concurrency_postgres() {
    per_conversation_ordering_under_concurrency(Backend::Postgres).await;
}

#[tokio::test]
async fn long_replies_are_split_and_sent_in_order() {
    let Some(app) = chat_app(Backend::Sqlite, &[]).await else {
        return;
    };
    let phone = "+60121110011";
    whatsapp(&app, phone, "hello", "SMl1").await;
    drain(&app).await;
    let id = conversation_of(&app, phone).await.id;
    app.context.chat.take_over(id, "aisyah@shop").await.unwrap();
    let long = "This is one sentence of a long answer that an admin wrote. ".repeat(50);
    app.context
        .chat
        .reply_as_human(id, "aisyah@shop", &long)
        .await
        .unwrap();
    let sent = sent_to(&app, phone).await;
    let parts: Vec<&str> = sent
        .iter()
        .filter(|m| m.kind == "chat_human")
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(
        parts.len(),
        2,
        "{} characters in two messages",
        long.trim().len()
    );
    assert!(
        parts
            .iter()
            .all(|p| p.chars().count() <= 1600 && p.ends_with('.'))
    );
    assert_eq!(parts.join(" "), long.trim());
}

// ---------------------------------------------------------------------------
// Claude on Bedrock answering, against a fake Converse endpoint.

fn converse_answer(text: &str) -> wiremock::ResponseTemplate {
    wiremock::ResponseTemplate::new(200).set_body_json(json!({
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 812, "outputTokens": 41, "totalTokens": 853},
        "metrics": {"latencyMs": 420}
    }))
}

async fn with_model(app: &TestApp, server: &wiremock::MockServer) -> kedai::chat::Assistant {
    use kedai::platform::llm::bedrock::{BedrockLlm, BedrockLlmConfig};
    let llm = BedrockLlm::new(BedrockLlmConfig {
        model_id: "anthropic.claude-sonnet-4-6".into(),
        region: "ap-southeast-1".into(),
        endpoint_url: Some(server.uri()),
        max_attempts: 2,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(10),
        attempt_timeout: Duration::from_secs(5),
        static_credentials: Some(("test".into(), "test-secret".into())),
    })
    .await
    .unwrap();
    let ctx = &app.context;
    kedai::chat::Assistant::new(
        ctx.settings.clone(),
        ctx.writer.clone(),
        ctx.queue.clone(),
        ctx.knowledge.clone(),
        ctx.messaging.clone(),
        Some(std::sync::Arc::new(llm)),
    )
}

#[tokio::test]
async fn the_model_answers_from_sources_and_a_throttled_turn_gets_a_holding_reply_then_an_answer() {
    use wiremock::matchers::{method, path};
    let Some(app) = chat_app(Backend::Sqlite, &[("chat.retry_delay", "100ms")]).await else {
        return;
    };
    let server = wiremock::MockServer::start().await;
    let converse = "/model/anthropic.claude-sonnet-4-6/converse";
    let assistant = with_model(&app, &server).await;

    // 1. An answer: the request carries the policy, the sources with their
    //    citation ids, and the question; the reply is stored with usage.
    wiremock::Mock::given(method("POST"))
        .and(path(converse))
        .respond_with(converse_answer("Delivery to Sabah takes 4-7 working days."))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let phone = "+60121110020";
    whatsapp(
        &app,
        phone,
        "how many days does delivery to sabah take?",
        "SMm1",
    )
    .await;
    assistant.drain(100).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    let system = body["system"][0]["text"].as_str().unwrap();
    assert!(system.contains("Answer only from the SOURCES"), "{system}");
    assert!(
        system.contains("[kb:"),
        "sources carry citation ids: {system}"
    );
    assert!(system.contains("ORDERS"), "{system}");
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.last().unwrap()["role"], "user");
    assert_eq!(
        messages.last().unwrap()["content"][0]["text"],
        "how many days does delivery to sabah take?"
    );
    assert_eq!(body["inferenceConfig"]["maxTokens"], 700);
    let sent = sent_to(&app, phone).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body, "Delivery to Sabah takes 4-7 working days.");
    let history = messages_of(&app, phone).await;
    let reply = &history[1];
    assert_eq!(reply.model.as_deref(), Some("anthropic.claude-sonnet-4-6"));
    assert_eq!(
        (reply.input_tokens, reply.output_tokens),
        (Some(812), Some(41))
    );
    assert!(reply.passages.is_some());

    // 2. Throttled past the retry budget: a holding reply, the turn stays
    //    waiting, and it is answered once Bedrock recovers.
    server.reset().await;
    wiremock::Mock::given(method("POST"))
        .and(path(converse))
        .respond_with(
            wiremock::ResponseTemplate::new(429)
                .insert_header("x-amzn-ErrorType", "ThrottlingException")
                .set_body_json(
                    json!({"message": "Too many requests, please wait before trying again."}),
                ),
        )
        .mount(&server)
        .await;
    let phone = "+60121110021";
    whatsapp(&app, phone, "can I pay with FPX?", "SMm2").await;
    assistant.try_process_once().await.unwrap();
    let sent = sent_to(&app, phone).await;
    assert_eq!(sent.len(), 1, "the holding reply");
    assert!(sent[0].body.contains("in a moment"), "{}", sent[0].body);
    assert_eq!(
        messages_of(&app, phone).await[0].status,
        "received",
        "not dropped"
    );
    assert_eq!(
        app.context.queue.stats().await.unwrap().depth,
        1,
        "the job waits to be retried"
    );

    server.reset().await;
    wiremock::Mock::given(method("POST"))
        .and(path(converse))
        .respond_with(converse_answer("Yes, FPX online banking is accepted."))
        .mount(&server)
        .await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    assistant.drain(100).await.unwrap();
    let sent = sent_to(&app, phone).await;
    assert_eq!(sent.len(), 2, "{sent:#?}");
    assert_eq!(sent[1].body, "Yes, FPX online banking is accepted.");
    assert_eq!(messages_of(&app, phone).await[0].status, "answered");

    // 3. The model says the sources do not answer: hand over, list it.
    server.reset().await;
    wiremock::Mock::given(method("POST"))
        .and(path(converse))
        .respond_with(converse_answer("HANDOFF"))
        .mount(&server)
        .await;
    let phone = "+60121110022";
    whatsapp(
        &app,
        phone,
        "do you ship to sabah on public holidays?",
        "SMm3",
    )
    .await;
    assistant.drain(100).await.unwrap();
    let conv = conversation_of(&app, phone).await;
    assert_eq!(conv.state, "needs_human");
    assert_eq!(conv.state_reason.as_deref(), Some("model_unsure"));
    assert!(sent_to(&app, phone).await[0].body.contains("not sure"));
}

// ---------------------------------------------------------------------------
// The production backends: SQS (moto) for the queue, Redis for rate limits.

fn inbound(from: &str, body: &str, sid: &str) -> kedai::chat::inbound::InboundMessage {
    kedai::chat::inbound::InboundMessage::from_params(&params(from, body, sid)).unwrap()
}

/// moto's endpoint: `KEDAI_TEST_SQS_URL`, else the S3 emulator's (moto
/// serves both).
fn moto_url() -> Option<String> {
    std::env::var("KEDAI_TEST_SQS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| crate::helpers::service_url("KEDAI_TEST_S3_URL"))
}

async fn answered_within(assistant: &kedai::chat::Assistant, app: &TestApp, phone: &str) -> usize {
    for _ in 0..50 {
        assistant.try_process_once().await.unwrap();
        if !sent_to(app, phone).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sent_to(app, phone).await.len()
}

/// The SQS backend (moto): a job sent after the commit is answered; a job
/// whose send failed is sent again by the relay.
#[tokio::test]
async fn on_sqs_jobs_follow_the_commit_and_the_relay_covers_a_failed_send() {
    use kedai::platform::queue::sqs::{SqsClientConfig, SqsQueue, client};
    let Some(endpoint) = moto_url() else {
        return;
    };
    let Some(app) = chat_app(Backend::Sqlite, &[]).await else {
        return;
    };
    let sqs = client(&SqsClientConfig {
        region: "us-east-1".into(),
        endpoint_url: Some(endpoint.clone()),
        static_credentials: Some(("test".into(), "test".into())),
    })
    .await;
    let name = format!("kedai-chat-{}", uuid::Uuid::new_v4().simple());
    let queue: std::sync::Arc<dyn kedai::platform::queue::Queue> = std::sync::Arc::new(
        SqsQueue::create_with_dead_letter_queue(sqs.clone(), &name, 5)
            .await
            .unwrap(),
    );
    let ctx = &app.context;
    let assistant = kedai::chat::Assistant::new(
        ctx.settings.clone(),
        ctx.writer.clone(),
        queue.clone(),
        ctx.knowledge.clone(),
        ctx.messaging.clone(),
        None,
    );
    let phone = "+60121110030";
    let stored = assistant
        .intake()
        .submit(
            inbound(phone, "how many days does delivery to sabah take?", "SMs1"),
            kedai::chat::Admission::Answer,
        )
        .await
        .unwrap();
    assert!(matches!(stored, kedai::chat::Stored::New { .. }));
    assert!(
        messages_of(&app, phone).await[0].queued,
        "queued after the commit"
    );
    assert_eq!(answered_within(&assistant, &app, phone).await, 1);
    assert!(sent_to(&app, phone).await[0].body.contains("[kb:"));

    // SQS refuses the job (a queue that does not exist): the message is
    // still stored, and the relay queues it later.
    let broken: std::sync::Arc<dyn kedai::platform::queue::Queue> =
        std::sync::Arc::new(SqsQueue::new(
            sqs.clone(),
            format!("{endpoint}/000000000000/missing-{name}"),
            None,
        ));
    let failing = kedai::chat::Assistant::new(
        ctx.settings.clone(),
        ctx.writer.clone(),
        broken,
        ctx.knowledge.clone(),
        ctx.messaging.clone(),
        None,
    );
    let phone = "+60121110031";
    failing
        .intake()
        .submit(
            inbound(phone, "can I pay with FPX?", "SMs2"),
            kedai::chat::Admission::Answer,
        )
        .await
        .expect("stored although SQS failed");
    assert!(!messages_of(&app, phone).await[0].queued);
    let relayed = kedai::chat::intake::relay_unqueued(&ctx.writer, queue.as_ref(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(relayed, 1);
    assert!(messages_of(&app, phone).await[0].queued);
    assert_eq!(answered_within(&assistant, &app, phone).await, 1);
}

/// Rate limits in Redis are shared by every replica.
#[tokio::test]
async fn rate_limits_in_redis_are_shared_by_replicas() {
    let Some(redis) = crate::helpers::service_url("KEDAI_TEST_REDIS_URL") else {
        return;
    };
    let prefix = format!("kedai-test-{}:", uuid::Uuid::new_v4().simple());
    let extra = [
        ("server.public_url", PUBLIC),
        ("twilio.auth_token", AUTH_TOKEN),
        ("redis.kind", "redis"),
        ("redis.url", redis.as_str()),
        ("redis.key_prefix", prefix.as_str()),
        ("chat.sender_limit", "1"),
    ];
    let Some(app) = spawn_app_with(Backend::Sqlite, &extra).await else {
        return;
    };
    let replica = crate::helpers::spawn_on(app.database.clone(), &extra).await;
    let phone = "+60121110032";
    whatsapp(&app, phone, "hello", "SMrr1").await;
    whatsapp(&replica, phone, "hello?", "SMrr2").await;
    whatsapp(&app, phone, "hello??", "SMrr3").await;
    let history = messages_of(&app, phone).await;
    let statuses: Vec<&str> = history
        .iter()
        .filter(|m| m.role == "user")
        .map(|m| m.status.as_str())
        .collect();
    assert_eq!(statuses, vec!["received", "limited", "limited"]);
    let notices = history.iter().filter(|m| m.kind == "notice").count();
    assert_eq!(notices, 1, "one notice across replicas");
}

/// `kedai chat send` signs like Twilio with the embedded token the server
/// generated and kept on disk; the running assistant answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kedai_chat_send_talks_to_a_running_server() {
    let Some(app) = spawn_app_with(
        Backend::Sqlite,
        &[("server.public_url", PUBLIC), ("chat.enabled", "true")],
    )
    .await
    else {
        return;
    };
    let token_file = app.database.files().join("twilio-auth-token");
    assert!(token_file.exists(), "the embedded token is kept on disk");
    let run = |args: Vec<String>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kedai"));
        for (key, _) in std::env::vars() {
            if key.starts_with("KEDAI") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        command
            .args(args)
            .env("KEDAI__DATABASE__KIND", "sqlite")
            .env("KEDAI__DATABASE__URL", app.database.url())
            .env("KEDAI__SERVER__PUBLIC_URL", PUBLIC)
            .env("KEDAI__TWILIO__EMBEDDED_TOKEN_FILE", &token_file)
            .env("KEDAI__LOG__LEVEL", "error");
        command
    };
    let send = run(vec![
        "chat".into(),
        "send".into(),
        "--from".into(),
        "+60121110040".into(),
        "--server".into(),
        app.address.clone(),
        "where is my order?".into(),
    ]);
    let output = tokio::task::spawn_blocking(move || {
        let mut send = send;
        send.output()
    })
    .await
    .unwrap()
    .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(printed.contains("can't find an order"), "{printed}");

    let show = run(vec!["chat".into(), "show".into(), "+60121110040".into()]);
    let output = tokio::task::spawn_blocking(move || {
        let mut show = show;
        show.output()
    })
    .await
    .unwrap()
    .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("where is my order?"), "{printed}");
    assert!(printed.contains("assistant"), "{printed}");
}

#[tokio::test]
async fn repeated_complaints_hand_over_to_a_person() {
    let Some(app) = chat_app(Backend::Sqlite, &[]).await else {
        return;
    };
    let phone = "+60121110050";
    whatsapp(&app, phone, "do you ship to singapore?", "SMd1").await;
    drain(&app).await;
    whatsapp(
        &app,
        phone,
        "that's not what I asked, do you ship to singapore",
        "SMd2",
    )
    .await;
    drain(&app).await;
    assert_eq!(
        conversation_of(&app, phone).await.state,
        "bot",
        "one complaint is not enough"
    );
    whatsapp(&app, phone, "useless. not helpful at all", "SMd3").await;
    drain(&app).await;
    let conv = conversation_of(&app, phone).await;
    assert_eq!(conv.state, "needs_human");
    assert_eq!(conv.state_reason.as_deref(), Some("dissatisfied"));
    let last = sent_to(&app, phone).await.pop().unwrap();
    assert!(
        last.body.contains("passing this to a person"),
        "{}",
        last.body
    );
}

#[tokio::test]
async fn history_past_its_retention_is_purged() {
    use sea_orm::{ActiveModelTrait, ActiveValue::Set};
    let Some(app) = chat_app(Backend::Sqlite, &[]).await else {
        return;
    };
    whatsapp(&app, "+60121110051", "hello", "SMp1").await;
    whatsapp(&app, "+60121110052", "hello", "SMp2").await;
    drain(&app).await;
    // Age the first conversation by 31 days.
    let old = conversation_of(&app, "+60121110051").await;
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(31);
    for m in messages_of(&app, "+60121110051").await {
        let mut row: message::ActiveModel = m.into();
        row.created_at = Set(long_ago);
        row.update(&app.context.db).await.unwrap();
    }
    let mut row: conversation::ActiveModel = old.clone().into();
    row.last_message_at = Set(long_ago);
    row.update(&app.context.db).await.unwrap();

    let before = time::OffsetDateTime::now_utc() - app.context.settings.chat.retention;
    let (messages, conversations) = kedai::chat::store::purge(&app.context.writer, before)
        .await
        .unwrap();
    assert_eq!((messages, conversations), (2, 1));
    assert!(
        conversation::Entity::find_by_id(old.id)
            .one(&app.context.db)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        messages_of(&app, "+60121110052").await.len(),
        2,
        "recent history stays"
    );
}

/// Posts a Twilio-signed message to an app built with any settings (signs
/// with the app's own token and public URL).
pub async fn whatsapp_signed(app: &TestApp, from: &str, body: &str, sid: &str) {
    let params = params(from, body, sid);
    let url = format!(
        "{}/webhooks/twilio",
        app.context
            .settings
            .server
            .public_url
            .as_str()
            .trim_end_matches('/')
    );
    let signature = twilio::sign(&app.context.twilio_tokens[0], &url, &params);
    let response = post(app, &params, Some(&signature)).await;
    assert_eq!(response.status(), 200, "{body}");
}

// ---------------------------------------------------------------------------
// Graceful shutdown of the assistant's poller, against a slow Twilio.

/// How long Twilio takes to accept the first message: long enough for the
/// test to shut the poller down, and queue another message, while that
/// first turn is still in flight. Later messages are accepted at once.
const SLOW_FIRST_SEND: Duration = Duration::from_secs(5);

/// A Twilio Messages API that accepts each message with a new `SM…` id,
/// the first one only after `SLOW_FIRST_SEND`.
async fn slow_twilio_api() -> wiremock::MockServer {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use wiremock::matchers::{method, path_regex};
    let server = wiremock::MockServer::start().await;
    let sent = AtomicUsize::new(0);
    wiremock::Mock::given(method("POST"))
        .and(path_regex(
            r"^/2010-04-01/Accounts/AC[0-9a-f]{32}/Messages\.json$",
        ))
        .respond_with(move |_: &wiremock::Request| {
            let n = sent.fetch_add(1, Ordering::SeqCst);
            let delay = if n == 0 {
                SLOW_FIRST_SEND
            } else {
                Duration::from_millis(50)
            };
            wiremock::ResponseTemplate::new(201)
                .set_delay(delay)
                .set_body_raw(
                    format!(r#"{{"sid":"SM{n:032x}","status":"queued"}}"#),
                    "application/json",
                )
        })
        .mount(&server)
        .await;
    server
}

/// What Twilio was asked to send: (recipient, text), in arrival order.
async fn twilio_sends(server: &wiremock::MockServer) -> Vec<(String, String)> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|request| {
            let form: std::collections::HashMap<String, String> =
                url::form_urlencoded::parse(&request.body)
                    .into_owned()
                    .collect();
            (
                form["To"].trim_start_matches("whatsapp:").to_string(),
                form.get("Body").cloned().unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits (at most 20 s) until Twilio has received `n` send requests; on
/// time out, prints what the database holds.
async fn wait_for_twilio_sends(app: &TestApp, server: &wiremock::MockServer, n: usize) {
    let started = std::time::Instant::now();
    while server.received_requests().await.unwrap().len() < n {
        if started.elapsed() > Duration::from_secs(20) {
            use sea_orm::{ConnectionTrait, Statement};
            let db = &app.context.db;
            for sql in [
                "SELECT id, conversation_id, role, kind, status, body FROM chat_messages",
                "SELECT id, recipient, kind, status, error_message FROM messages",
                "SELECT id, receive_count, visible_at FROM queue_messages",
            ] {
                let rows = db
                    .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
                    .await
                    .unwrap();
                eprintln!("{sql}: {rows:#?}");
            }
            panic!("Twilio never got {n} send request(s)");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `Assistant::run` on shutdown stops receiving, yet the turn it is in the
/// middle of (waiting for Twilio to accept the reply) finishes before
/// `run` returns: the reply is sent once and the job deleted. A message
/// that arrives after the token was cancelled, while that turn is still in
/// flight, is not received: its job stays in the queue, visible, and the
/// next poller answers it, once.
async fn shutdown_stops_receiving_and_lets_the_turn_in_flight_finish(backend: Backend) {
    let twilio = slow_twilio_api().await;
    let api_base = twilio.uri();
    let Some(app) = chat_app(
        backend,
        &[
            ("messaging.kind", "twilio"),
            ("twilio.api_base", &api_base),
            ("twilio.account_sid", "AC0123456789abcdef0123456789abcdef"),
            ("twilio.from", "+14155238886"),
            // Longer than the held send: the turn is waited for, not
            // abandoned (see the next test for that).
            ("server.shutdown_grace", "30s"),
            // Free slots: a poller that went on receiving would take the
            // second job while the first turn is still in flight.
            ("chat.workers", "4"),
            ("queue.wait_time", "1s"),
            ("queue.poll_interval", "50ms"),
        ],
    )
    .await
    else {
        return;
    };
    assert!(
        !app.context.settings.chat.enabled,
        "the app runs no poller of its own: the test's is the only consumer"
    );
    let queue = &app.context.queue;
    let (first, second) = ("+60121110080", "+60121110081");

    let shutdown = tokio_util::sync::CancellationToken::new();
    let poller = tokio::spawn(app.context.chat.clone().run(shutdown.clone()));
    whatsapp(&app, first, "hello", "SMx1").await;
    wait_for_twilio_sends(&app, &twilio, 1).await;

    // The turn is in flight: Twilio has the reply but has not answered.
    let outbound = sent_to(&app, first).await;
    assert_eq!(outbound.len(), 1, "{outbound:#?}");
    assert_eq!(
        outbound[0].status, "submitting",
        "shutdown must begin while the reply is being sent"
    );
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.depth, stats.in_flight), (1, 1), "{stats:?}");

    shutdown.cancel();
    whatsapp(&app, second, "hi there", "SMx2").await;
    assert!(
        !poller.is_finished(),
        "the poller is still finishing the first turn when the second message is queued"
    );

    tokio::time::timeout(Duration::from_secs(20), poller)
        .await
        .expect("run returns once the turn in flight is done")
        .expect("the poller did not panic");

    // The turn in flight finished before `run` returned.
    let sends = twilio_sends(&twilio).await;
    assert_eq!(sends.len(), 1, "{sends:#?}");
    assert_eq!(sends[0].0, first);
    let outbound = sent_to(&app, first).await;
    assert_eq!(outbound.len(), 1, "{outbound:#?}");
    assert_eq!(outbound[0].status, "queued", "Twilio accepted it");
    assert_eq!(
        outbound[0].provider_sid.as_deref(),
        Some(&*format!("SM{:032x}", 0))
    );
    assert_eq!(outbound[0].body, sends[0].1);
    let history = messages_of(&app, first).await;
    assert_eq!(history.len(), 2, "{history:#?}");
    assert_eq!(
        (history[0].role.as_str(), history[0].status.as_str()),
        ("user", "answered")
    );
    assert_eq!(
        (history[1].role.as_str(), history[1].status.as_str()),
        ("assistant", "sent")
    );
    assert_eq!(history[0].reply_to, Some(history[1].id));

    // The message that came after the shutdown was not received: its job
    // is the only one left, and visible (not hidden by a receive).
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.depth, stats.in_flight), (1, 0), "{stats:?}");
    let waiting = messages_of(&app, second).await;
    assert_eq!(waiting.len(), 1, "{waiting:#?}");
    assert_eq!(waiting[0].status, "received");
    assert!(sent_to(&app, second).await.is_empty());
    // Nothing left running behind the stopped poller picks it up either.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(twilio_sends(&twilio).await.len(), 1);
    assert_eq!(queue.stats().await.unwrap().depth, 1);
    assert_eq!(messages_of(&app, second).await[0].status, "received");

    // The next poller answers it, once.
    let restart = tokio_util::sync::CancellationToken::new();
    let poller = tokio::spawn(app.context.chat.clone().run(restart.clone()));
    wait_for_twilio_sends(&app, &twilio, 2).await;
    let started = std::time::Instant::now();
    while queue.stats().await.unwrap().depth > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the second job was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    restart.cancel();
    tokio::time::timeout(Duration::from_secs(20), poller)
        .await
        .expect("an idle poller stops at once")
        .expect("the poller did not panic");
    let sends = twilio_sends(&twilio).await;
    assert_eq!(sends.len(), 2, "{sends:#?}");
    assert_eq!(sends[1].0, second);
    let answered = messages_of(&app, second).await;
    assert_eq!(answered.len(), 2, "{answered:#?}");
    assert_eq!(answered[0].status, "answered");
    assert_eq!(answered[1].status, "sent");
    assert_eq!(sent_to(&app, second).await.len(), 1);
    assert_eq!(
        sent_to(&app, first).await.len(),
        1,
        "the first is not repeated"
    );
}

/// A turn still running after half of `server.shutdown_grace` (here 1 s of
/// 2 s; Twilio holds the reply for 5 s) is abandoned: `run` returns without
/// waiting for it, and its job and conversation lease are given back at
/// once, so the next poller takes it without waiting out the visibility
/// timeout. The reply Twilio already had is not sent again.
async fn shutdown_gives_back_a_turn_that_outlasts_the_grace(backend: Backend) {
    let twilio = slow_twilio_api().await;
    let api_base = twilio.uri();
    let Some(app) = chat_app(
        backend,
        &[
            ("messaging.kind", "twilio"),
            ("twilio.api_base", &api_base),
            ("twilio.account_sid", "AC0123456789abcdef0123456789abcdef"),
            ("twilio.from", "+14155238886"),
            ("server.shutdown_grace", "2s"),
            ("queue.visibility_timeout", "30s"),
            ("queue.wait_time", "1s"),
        ],
    )
    .await
    else {
        return;
    };
    let queue = &app.context.queue;
    let phone = "+60121110082";
    let shutdown = tokio_util::sync::CancellationToken::new();
    let poller = tokio::spawn(app.context.chat.clone().run(shutdown.clone()));
    whatsapp(&app, phone, "hello", "SMab1").await;
    wait_for_twilio_sends(&app, &twilio, 1).await;
    assert_eq!(queue.stats().await.unwrap().in_flight, 1);

    shutdown.cancel();
    // Twilio answers after 5 s; a poller that waited for the turn would
    // still be running at 4 s.
    tokio::time::timeout(Duration::from_secs(4), poller)
        .await
        .expect("run gives up on the turn after half the grace")
        .expect("the poller did not panic");
    let stats = queue.stats().await.unwrap();
    assert_eq!(
        (stats.depth, stats.in_flight),
        (1, 0),
        "the job is visible again at once: {stats:?}"
    );
    let conversation = conversation_of(&app, phone).await;
    assert_eq!(conversation.worker, None, "the lease is released");

    // The next poller settles it at once, without a second send.
    let restart = tokio_util::sync::CancellationToken::new();
    let poller = tokio::spawn(app.context.chat.clone().run(restart.clone()));
    let started = std::time::Instant::now();
    while queue.stats().await.unwrap().depth > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the abandoned job was never settled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    restart.cancel();
    tokio::time::timeout(Duration::from_secs(20), poller)
        .await
        .expect("an idle poller stops at once")
        .expect("the poller did not panic");
    assert_eq!(twilio_sends(&twilio).await.len(), 1, "never sent twice");
    assert_eq!(sent_to(&app, phone).await.len(), 1);
    let history = messages_of(&app, phone).await;
    assert_eq!(history[0].status, "answered", "{history:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_back_a_turn_that_outlasts_the_grace_sqlite() {
    shutdown_gives_back_a_turn_that_outlasts_the_grace(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_back_a_turn_that_outlasts_the_grace_postgres() {
    shutdown_gives_back_a_turn_that_outlasts_the_grace(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_receiving_and_lets_the_turn_in_flight_finish_sqlite() {
    shutdown_stops_receiving_and_lets_the_turn_in_flight_finish(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_receiving_and_lets_the_turn_in_flight_finish_postgres() {
    shutdown_stops_receiving_and_lets_the_turn_in_flight_finish(Backend::Postgres).await;
}
