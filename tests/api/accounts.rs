//! Accounts over HTTP on both databases: sign-up, sign-in with throttling,
//! sessions, sign-out, and order history that only the owner sees.

use crate::cart::{in_stock_variant, variant_id_of};
use crate::helpers::{Backend, Browser, TestApp, between};

crate::on_both_databases!(
    signing_up_signs_in_and_signing_out_ends_the_session,
    bad_sign_ups_are_refused_with_reasons,
    sign_in_checks_the_password_and_throttles,
    order_history_shows_only_the_accounts_orders,
    profile_and_password_can_be_changed,
    a_cart_follows_the_account_to_another_browser,
    a_password_is_reset_by_a_single_use_whatsapp_link,
    the_account_page_verifies_the_whatsapp_number_by_a_code,
);

async fn a_password_is_reset_by_a_single_use_whatsapp_link(app: TestApp) {
    let mut owner = Browser::open(&app).await;
    owner.sign_up(&app, "rina@example.com").await;

    let mut browser = Browser::open(&app).await;
    let response = browser
        .post(&app, "/account/reset", &[("contact", "rina@example.com")])
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("If an account with a WhatsApp number matches")
    );
    // An unknown contact gets the same answer, and no message is sent.
    let unknown = browser
        .post(&app, "/account/reset", &[("contact", "+60111111111")])
        .await;
    assert!(
        unknown
            .text()
            .await
            .unwrap()
            .contains("If an account with a WhatsApp number matches")
    );
    // Nothing is sent inside the request: the link travels through the bus.
    assert!(
        kedai::platform::messaging::list(&app.context.db, Some("+60198765432"), 5)
            .await
            .unwrap()
            .is_empty()
    );
    app.context.dispatcher.drain().await.unwrap();
    assert!(
        kedai::platform::messaging::list(&app.context.db, Some("+60111111111"), 5)
            .await
            .unwrap()
            .is_empty()
    );

    let messages = kedai::platform::messaging::list(&app.context.db, Some("+60198765432"), 5)
        .await
        .unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].kind, "password_reset");
    assert_eq!(messages[0].status, "recorded");
    let link = messages[0]
        .body
        .split_whitespace()
        .find(|w| w.contains("/account/reset/"))
        .unwrap();
    let path = &link[link.find("/account/reset/").unwrap()..];

    let form = browser.get(&app, path).await;
    assert_eq!(form.status(), 200);
    assert_eq!(form.headers()["referrer-policy"], "no-referrer");
    let response = browser
        .post(&app, path, &[("new_password", "a fresh password 2026")])
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"],
        "/account?notice=password_changed"
    );
    assert!(browser.session.is_some(), "signed in with the new password");

    // The link works once.
    assert_eq!(browser.get(&app, path).await.status(), 410);
    let again = browser
        .post(&app, path, &[("new_password", "yet another password")])
        .await;
    assert_eq!(again.status(), 410);
    let mut fresh = Browser::open(&app).await;
    let old = fresh
        .post(
            &app,
            "/account/login",
            &[
                ("email", "rina@example.com"),
                ("password", "a long enough password"),
            ],
        )
        .await;
    assert_eq!(old.status(), 401);
    let new = fresh
        .post(
            &app,
            "/account/login",
            &[
                ("email", "rina@example.com"),
                ("password", "a fresh password 2026"),
            ],
        )
        .await;
    assert_eq!(new.status(), 303);
    // A made-up token is not a link.
    assert_eq!(
        fresh
            .get(&app, &format!("/account/reset/{}", "0".repeat(64)))
            .await
            .status(),
        410
    );
}

async fn a_cart_follows_the_account_to_another_browser(app: TestApp) {
    let (_, sku, _) = in_stock_variant(10);
    let id = variant_id_of(&app, &sku).to_string();
    // On the phone: a guest cart, then sign-up (the cart stays).
    let mut phone = Browser::open(&app).await;
    phone
        .post(&app, "/cart/add", &[("variant_id", &id), ("quantity", "2")])
        .await;
    phone.sign_up(&app, "hana@example.com").await;
    assert!(
        phone
            .get(&app, "/cart")
            .await
            .text()
            .await
            .unwrap()
            .contains(&sku)
    );

    // On the laptop: one more of the same as a guest, then sign in.
    let mut laptop = Browser::open(&app).await;
    laptop
        .post(&app, "/cart/add", &[("variant_id", &id), ("quantity", "1")])
        .await;
    let response = laptop
        .post(
            &app,
            "/account/login",
            &[
                ("email", "hana@example.com"),
                ("password", "a long enough password"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    let cart = laptop.get(&app, "/cart").await.text().await.unwrap();
    assert!(cart.contains(&sku));
    assert!(cart.contains("value=\"3\""), "quantities add up: {cart}");
}

async fn profile_and_password_can_be_changed(app: TestApp) {
    let mut browser = Browser::open(&app).await;
    browser.sign_up(&app, "mei@example.com").await;

    let response = browser
        .post(
            &app,
            "/account/profile",
            &[
                ("name", "Mei Ling"),
                ("email", "Mei.Ling@Example.com"),
                ("phone", "+65 8123 4567"),
            ],
        )
        .await;
    assert_eq!(
        response.headers()["location"],
        "/account?notice=profile_saved"
    );
    let html = browser
        .get(&app, "/account?notice=profile_saved")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("Your details are saved."));
    assert!(html.contains("Hello, Mei Ling"));
    assert!(html.contains("mei.ling@example.com"));
    assert!(
        !html.contains("(order updates on)"),
        "unticked opt-in is off"
    );

    let bad = browser
        .post(
            &app,
            "/account/profile",
            &[("name", "Mei"), ("email", "nope"), ("phone", "")],
        )
        .await;
    assert_eq!(bad.status(), 422);

    let wrong = browser
        .post(
            &app,
            "/account/password",
            &[
                ("current_password", "not my password"),
                ("new_password", "brand new password"),
            ],
        )
        .await;
    assert_eq!(wrong.status(), 422);
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("current password is not right")
    );
    let changed = browser
        .post(
            &app,
            "/account/password",
            &[
                ("current_password", "a long enough password"),
                ("new_password", "brand new password"),
            ],
        )
        .await;
    assert_eq!(
        changed.headers()["location"],
        "/account?notice=password_changed"
    );

    let mut again = Browser::open(&app).await;
    let old = again
        .post(
            &app,
            "/account/login",
            &[
                ("email", "mei.ling@example.com"),
                ("password", "a long enough password"),
            ],
        )
        .await;
    assert_eq!(old.status(), 401);
    let new = again
        .post(
            &app,
            "/account/login",
            &[
                ("email", "mei.ling@example.com"),
                ("password", "brand new password"),
            ],
        )
        .await;
    assert_eq!(new.status(), 303);

    // Signed out, the forms only lead to the sign-in page.
    let mut anonymous = Browser::open(&app).await;
    let response = anonymous
        .post(
            &app,
            "/account/profile",
            &[("name", "X"), ("email", "x@example.com")],
        )
        .await;
    assert_eq!(response.headers()["location"], "/account/login");
}

impl Browser {
    /// A shopper's browser.
    async fn open(app: &TestApp) -> Browser {
        Browser::open_at(app, "/account/signup", "kedai_session").await
    }

    async fn sign_up(&mut self, app: &TestApp, email: &str) -> reqwest::Response {
        self.post(
            app,
            "/account/signup",
            &[
                ("name", "Farah Lim"),
                ("email", email),
                ("phone", "+60 19-876 5432"),
                ("whatsapp_opt_in", "on"),
                ("password", "a long enough password"),
            ],
        )
        .await
    }
}

async fn signing_up_signs_in_and_signing_out_ends_the_session(app: TestApp) {
    let mut browser = Browser::open(&app).await;
    let response = browser.sign_up(&app, "farah@example.com").await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/account");
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("kedai_session="))
        .unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let account = browser.get(&app, "/account").await;
    assert_eq!(account.status(), 200);
    let html = account.text().await.unwrap();
    assert!(html.contains("Hello, Farah Lim"));
    assert!(html.contains("+60198765432 (order updates on)"));
    assert!(html.contains("No orders yet"));

    let stolen_session = browser.session.clone();
    let response = browser.post(&app, "/account/logout", &[]).await;
    assert_eq!(response.status(), 303);
    assert!(browser.session.is_none(), "the cookie is removed");
    assert_eq!(
        browser.get(&app, "/account").await.status(),
        303,
        "signed out"
    );
    // The old session id is dead on the server too.
    browser.session = stolen_session;
    assert_eq!(
        browser.get(&app, "/account").await.headers()["location"],
        "/account/login"
    );

    // A made-up session id is not a session.
    browser.session = Some(format!("kedai_session={}", "ab".repeat(32)));
    assert_eq!(browser.get(&app, "/account").await.status(), 303);
}

async fn bad_sign_ups_are_refused_with_reasons(app: TestApp) {
    let mut first = Browser::open(&app).await;
    assert_eq!(first.sign_up(&app, "dup@example.com").await.status(), 303);
    let mut second = Browser::open(&app).await;
    let response = second.sign_up(&app, "DUP@example.com").await;
    assert_eq!(response.status(), 422);
    assert!(response.text().await.unwrap().contains("already exists"));

    let response = second
        .post(
            &app,
            "/account/signup",
            &[
                ("name", "X"),
                ("email", "x@example.com"),
                ("password", "short"),
            ],
        )
        .await;
    assert_eq!(response.status(), 422);
    let html = response.text().await.unwrap();
    assert!(html.contains("Choose a password of 10 to 128 characters"));
    assert!(
        html.contains("value=\"x@example.com\""),
        "what was typed is kept"
    );
    assert!(!html.contains("value=\"short\""), "but never the password");

    second.csrf = "00".repeat(32);
    assert_eq!(second.sign_up(&app, "y@example.com").await.status(), 403);
}

async fn sign_in_checks_the_password_and_throttles(app: TestApp) {
    let mut owner = Browser::open(&app).await;
    owner.sign_up(&app, "aina@example.com").await;
    let first_session = owner.session.clone();

    let mut browser = Browser::open(&app).await;
    let response = browser
        .post(
            &app,
            "/account/login",
            &[
                ("email", "aina@example.com"),
                ("password", "a long enough password"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert!(browser.session.is_some());
    assert_ne!(
        browser.session, first_session,
        "every sign-in gets a new session id"
    );

    let mut attacker = Browser::open(&app).await;
    for _ in 0..4 {
        let response = attacker
            .post(
                &app,
                "/account/login",
                &[
                    ("email", "aina@example.com"),
                    ("password", "guess guess guess"),
                ],
            )
            .await;
        assert_eq!(response.status(), 401);
        assert!(response.text().await.unwrap().contains("do not match"));
    }
    // The fifth and sixth attempts: the account is throttled, even with the right password.
    attacker
        .post(
            &app,
            "/account/login",
            &[
                ("email", "aina@example.com"),
                ("password", "guess guess guess"),
            ],
        )
        .await;
    let response = attacker
        .post(
            &app,
            "/account/login",
            &[
                ("email", "aina@example.com"),
                ("password", "a long enough password"),
            ],
        )
        .await;
    assert_eq!(response.status(), 429);
    assert!(response.text().await.unwrap().contains("Too many attempts"));
    assert!(attacker.session.is_none());

    // An unknown account is refused like a wrong password.
    let mut other = Browser::open(&app).await;
    let response = other
        .post(
            &app,
            "/account/login",
            &[
                ("email", "nobody@example.com"),
                ("password", "whatever whatever"),
            ],
        )
        .await;
    assert_eq!(response.status(), 401);
}

async fn order_history_shows_only_the_accounts_orders(app: TestApp) {
    let mut buyer = Browser::open(&app).await;
    buyer.sign_up(&app, "buyer@example.com").await;
    let (_, sku, _) = in_stock_variant(10);
    let id = variant_id_of(&app, &sku).to_string();
    buyer
        .post(&app, "/cart/add", &[("variant_id", &id), ("quantity", "1")])
        .await;
    // The checkout form is prefilled from the account.
    let checkout = buyer.get(&app, "/checkout").await.text().await.unwrap();
    assert!(checkout.contains("value=\"buyer@example.com\""));
    let response = buyer
        .post(
            &app,
            "/checkout",
            &[
                ("email", "buyer@example.com"),
                ("name", "Farah Lim"),
                ("line1", "1 Jalan Tun Razak"),
                ("city", "Kuala Lumpur"),
                ("postcode", "50400"),
                ("state", "WP Kuala Lumpur"),
            ],
        )
        .await;
    let pay_page = response.headers()["location"].to_str().unwrap().to_string();
    buyer.post(&app, &format!("{pay_page}/pay"), &[]).await;

    let html = buyer.get(&app, "/account").await.text().await.unwrap();
    assert!(html.contains("1 order"), "{html}");
    assert!(html.contains("<td>Paid</td>"));
    let link = between(&html, "<td><a href=\"", "\"")[0]
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    assert_eq!(buyer.get(&app, &link).await.status(), 200);

    // Another account (with its own WhatsApp number: numbers are unique too).
    let mut stranger = Browser::open(&app).await;
    let response = stranger
        .post(
            &app,
            "/account/signup",
            &[
                ("name", "Stranger"),
                ("email", "stranger@example.com"),
                ("password", "another long password"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    let html = stranger.get(&app, "/account").await.text().await.unwrap();
    assert!(html.contains("No orders yet"), "{html}");
}

/// With Redis configured, sessions live there: a second replica on the same
/// database and Redis recognises a session the first one started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_in_redis_are_shared_by_replicas() {
    let Some(url) = crate::helpers::service_url("KEDAI_TEST_REDIS_URL") else {
        return;
    };
    let prefix = format!("kedai-test-{}:", uuid::Uuid::now_v7().simple());
    let secret = "a-shared-secret-for-both-replicas";
    let settings = [
        ("redis.kind", "redis"),
        ("redis.url", url.as_str()),
        ("redis.key_prefix", prefix.as_str()),
        ("server.secret_key", secret),
    ];
    let first = crate::helpers::spawn_app_with(crate::helpers::Backend::Sqlite, &settings)
        .await
        .unwrap();
    let second = crate::helpers::spawn_on(first.database.clone(), &settings).await;

    let mut browser = Browser::open(&first).await;
    assert_eq!(
        browser.sign_up(&first, "shared@example.com").await.status(),
        303
    );
    let account = browser.get(&second, "/account").await;
    assert_eq!(account.status(), 200, "the other replica knows the session");
    assert!(account.text().await.unwrap().contains("Hello, Farah Lim"));

    // Clean up this test's keys.
    let pool = deadpool_redis::Config::from_url(url)
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    let mut connection = pool.get().await.unwrap();
    let keys: Vec<String> =
        deadpool_redis::redis::AsyncCommands::keys(&mut connection, format!("{prefix}*"))
            .await
            .unwrap();
    if !keys.is_empty() {
        deadpool_redis::redis::AsyncCommands::del::<_, ()>(&mut connection, keys)
            .await
            .unwrap();
    }
}

/// The account page offers to verify the WhatsApp number: a form post
/// (CSRF like any other) shows a code once; the code, arriving from that
/// number, verifies it; a new number is unverified again.
async fn the_account_page_verifies_the_whatsapp_number_by_a_code(app: TestApp) {
    let mut browser = Browser::open(&app).await;
    browser.sign_up(&app, "rina@example.com").await;
    let html = browser.get(&app, "/account").await.text().await.unwrap();
    assert!(html.contains("is not verified yet"), "{html}");
    assert!(html.contains("action=\"/account/whatsapp\""), "{html}");

    let forged = browser
        .post_with(&app, "/account/whatsapp", "not-the-token", &[])
        .await;
    assert_eq!(forged.status(), 403);
    let page = browser.post(&app, "/account/whatsapp", &[]).await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    let code = between(&page, "LINK ", "</strong>")[0].to_string();
    assert_eq!(code.len(), 6, "{page}");
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    // Shown once: the page no longer carries it (only its hash is stored).
    let html = browser.get(&app, "/account").await.text().await.unwrap();
    assert!(!html.contains(&code), "{html}");

    // What the assistant does when `LINK <code>` arrives from the number.
    let verified = kedai::customers::verify_phone_code(&app.context.writer, "+60198765432", &code)
        .await
        .unwrap();
    assert!(
        matches!(verified, kedai::customers::CodeCheck::Verified { ref name, .. } if name == "Farah Lim"),
        "{verified:?}"
    );
    let html = browser.get(&app, "/account").await.text().await.unwrap();
    assert!(html.contains("+60198765432 is verified"), "{html}");

    // Saving the same number keeps the proof; a new number loses it.
    let details = |phone: &'static str| {
        [
            ("name", "Farah Lim"),
            ("email", "rina@example.com"),
            ("phone", phone),
            ("whatsapp_opt_in", "on"),
        ]
    };
    let saved = browser
        .post(&app, "/account/profile", &details("+60198765432"))
        .await;
    assert_eq!(saved.status(), 303);
    let html = browser.get(&app, "/account").await.text().await.unwrap();
    assert!(html.contains("is verified"), "{html}");
    browser
        .post(&app, "/account/profile", &details("+60198760000"))
        .await;
    let html = browser.get(&app, "/account").await.text().await.unwrap();
    assert!(html.contains("+60198760000 is not verified yet"), "{html}");
}

/// Writes to the assistant from `from` and returns its reply.
async fn ask(app: &TestApp, body: &str, sid: &str, from: &str) -> String {
    crate::chat::whatsapp(app, from, body, sid).await;
    app.context.chat.drain(100).await.unwrap();
    crate::shop::messages_to(app, from).await[0].body.clone()
}

/// The WhatsApp assistant tells a number about an account's orders only
/// once the shopper proved the number is theirs by sending the account
/// page's code from it. Changing the number takes the proof away.
async fn a_whatsapp_number_sees_the_accounts_orders_only_once_proven(backend: Backend) {
    let Some(app) = crate::chat::chat_app(backend, &[]).await else {
        return;
    };
    let phone = "+60198765432";
    let writer = &app.context.writer;
    let account = kedai::customers::sign_up(
        writer,
        &kedai::customers::SignUp {
            name: "Farah Lim".into(),
            email: "farah@example.com".into(),
            phone: phone.into(),
            password: "a long enough password".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Ordered while signed in, without a WhatsApp number on the order: only
    // the account connects this order to the number.
    let order = crate::shop::paid_order(
        writer,
        &crate::shop::Buyer {
            phone: None,
            whatsapp_opt_in: false,
            customer_id: Some(account),
        },
        1,
    )
    .await;
    let reference = crate::shop::order_number(&order);

    // Not proven yet: the number is not told about the account's order.
    let reply = ask(&app, "where is my order?", "SMlink1", phone).await;
    assert!(reply.contains("can't find an order"), "{reply}");
    assert!(!reply.contains(&reference), "{reply}");

    let code = kedai::customers::start_phone_verification(writer, account)
        .await
        .unwrap();
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);

    // A wrong code from the right number, or the right code from another
    // number, proves nothing.
    let reply = ask(&app, &format!("LINK {wrong}"), "SMlink2", phone).await;
    assert!(reply.contains("doesn't match"), "{reply}");
    let reply = ask(&app, &format!("link {code}"), "SMlink3", "+60111112222").await;
    assert!(reply.contains("no code waiting"), "{reply}");
    let reply = ask(&app, "where is my order?", "SMlink4", phone).await;
    assert!(!reply.contains(&reference), "{reply}");

    // The right code from the right number links the two.
    let reply = ask(&app, &format!("link {code}"), "SMlink5", phone).await;
    assert!(reply.contains("now linked to your account"), "{reply}");
    let reply = ask(&app, "where is my order?", "SMlink6", phone).await;
    assert!(reply.contains(&reference), "{reply}");
    // A code works once.
    let reply = ask(&app, &format!("link {code}"), "SMlink7", phone).await;
    assert!(reply.contains("no code waiting"), "{reply}");

    // A new number is not proven, and the old one loses the account.
    kedai::customers::update_profile(
        writer,
        account,
        &kedai::customers::Profile {
            name: "Farah Lim".into(),
            email: "farah@example.com".into(),
            phone: "+60198760000".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let reply = ask(&app, "where is my order?", "SMlink8", phone).await;
    assert!(!reply.contains(&reference), "{reply}");
    assert!(reply.contains("can't find an order"), "{reply}");
}

/// Five wrong codes void the pending one, so guessing a million codes at
/// the rate limit gets nowhere.
async fn wrong_codes_void_the_pending_code(backend: Backend) {
    let Some(app) = crate::chat::chat_app(backend, &[]).await else {
        return;
    };
    let phone = "+60198765400";
    let writer = &app.context.writer;
    let account = kedai::customers::sign_up(
        writer,
        &kedai::customers::SignUp {
            name: "Ali".into(),
            email: "ali@example.com".into(),
            phone: phone.into(),
            password: "a long enough password".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let code = kedai::customers::start_phone_verification(writer, account)
        .await
        .unwrap();
    let number: u32 = code.parse().unwrap();
    for attempt in 1..=kedai::customers::PHONE_CODE_ATTEMPTS {
        let wrong = format!("{:06}", (number + attempt as u32) % 1_000_000);
        let check = kedai::customers::verify_phone_code(writer, phone, &wrong)
            .await
            .unwrap();
        assert_eq!(
            check,
            kedai::customers::CodeCheck::Wrong {
                tries_left: kedai::customers::PHONE_CODE_ATTEMPTS - attempt
            }
        );
    }
    let check = kedai::customers::verify_phone_code(writer, phone, &code)
        .await
        .unwrap();
    assert_eq!(check, kedai::customers::CodeCheck::NothingPending);
    assert_eq!(
        kedai::customers::verified_by_phone(&app.context.db, phone)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whatsapp_number_sees_the_accounts_orders_only_once_proven_sqlite() {
    a_whatsapp_number_sees_the_accounts_orders_only_once_proven(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whatsapp_number_sees_the_accounts_orders_only_once_proven_postgres() {
    a_whatsapp_number_sees_the_accounts_orders_only_once_proven(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_void_the_pending_code_sqlite() {
    wrong_codes_void_the_pending_code(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_void_the_pending_code_postgres() {
    wrong_codes_void_the_pending_code(Backend::Postgres).await;
}
