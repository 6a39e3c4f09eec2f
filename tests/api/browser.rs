//! A shopper in headless Chromium: home → category → product, with
//! screenshots under `target/test-artifacts/`. Needs Debian's `chromium`
//! and `chromium-driver`; skipped with a printed reason when they are
//! missing, a failure when `CI=true`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thirtyfour::ChromiumLikeCapabilities;
use thirtyfour::prelude::*;

use crate::helpers::{Backend, artifacts_dir, spawn_app};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn browser_available() -> bool {
    if std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("chromium and chromium-driver are required when CI=true");
    }
    eprintln!(
        "skipped: {CHROMIUM} or {CHROMEDRIVER} is not installed (apt-get install chromium chromium-driver)"
    );
    false
}

/// Starts chromedriver on a free port and waits until it reports ready.
async fn start_chromedriver() -> (Driver, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(child);
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(response) = client.get(format!("{url}/status")).send().await
            && let Ok(body) = response.text().await
            && body.contains("\"ready\":true")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (driver, url)
}

async fn chrome(driver_url: &str) -> WebDriver {
    let mut caps = DesiredCapabilities::chrome();
    caps.set_binary(CHROMIUM).unwrap();
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1280,1600",
    ] {
        caps.add_arg(arg).unwrap();
    }
    WebDriver::new(driver_url, caps)
        .await
        .expect("a browser session")
}

/// Waits until the browser has navigated to a URL containing `part`.
async fn wait_for_url(browser: &WebDriver, part: &str) -> WebDriverResult<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if browser.current_url().await?.as_str().contains(part) {
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "never navigated to a URL containing {part}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopper_browses_home_category_and_product() {
    if !browser_available() {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let (_driver, driver_url) = start_chromedriver().await;
    let browser = chrome(&driver_url).await;
    let shots = artifacts_dir();

    let result = async {
        browser.goto(format!("{}/", app.address)).await?;
        assert!(browser.title().await?.starts_with("Kedai"));
        browser
            .screenshot(&shots.join("storefront-1-home.png"))
            .await?;

        // The category navigation leads to a listing.
        let link = browser
            .find(By::Css("nav.category-nav a[href='/categories/footwear']"))
            .await?;
        link.click().await?;
        wait_for_url(&browser, "/categories/footwear").await?;
        let heading = browser.find(By::Css("main h1")).await?;
        assert_eq!(heading.text().await?, "Footwear");
        let cards = browser.find_all(By::Css(".product-card")).await?;
        assert_eq!(cards.len(), 22);

        // Sorting works with the plain form (no JavaScript needed).
        let select = browser.find(By::Css("#sort")).await?;
        select
            .find(By::Css("option[value='price_asc']"))
            .await?
            .click()
            .await?;
        browser
            .find(By::Css(".sort-form button"))
            .await?
            .click()
            .await?;
        wait_for_url(&browser, "sort=price_asc").await?;
        browser
            .screenshot(&shots.join("storefront-2-category.png"))
            .await?;

        // The first card opens its product page.
        let first = browser.find(By::Css(".product-card a")).await?;
        let href = first.attr("href").await?.expect("cards link to products");
        let name = first
            .find(By::Css(".product-card-name"))
            .await?
            .text()
            .await?;
        first.click().await?;
        wait_for_url(&browser, &href).await?;
        let title = browser.find(By::Css("main h1")).await?;
        assert_eq!(title.text().await?, name);
        assert!(
            !browser
                .find_all(By::Css(".variant-table tbody tr"))
                .await?
                .is_empty()
        );
        browser
            .screenshot(&shots.join("storefront-3-product.png"))
            .await?;

        // Add an in-stock product to the cart with the plain form.
        let catalog = kedai::catalog::demo::demo_catalog();
        let buyable = catalog
            .iter()
            .flat_map(|c| &c.products)
            .find(|p| p.variants.len() > 1 && p.variants.iter().all(|v| v.stock_on_hand >= 5))
            .expect("the demo has fully stocked products with options");
        browser
            .goto(format!("{}/products/{}", app.address, buyable.slug))
            .await?;
        let quantity = browser.find(By::Css("#quantity")).await?;
        quantity.clear().await?;
        quantity.send_keys("2").await?;
        browser
            .find(By::Css(".add-to-cart button"))
            .await?
            .click()
            .await?;
        wait_for_url(&browser, "/cart?notice=added").await?;
        let row = browser.find(By::Css(".cart-table tbody tr")).await?;
        assert!(row.text().await?.contains(&buyable.variants[0].sku));
        assert_eq!(
            browser
                .find(By::Css(".cart-table input[name='quantity']"))
                .await?
                .value()
                .await?
                .as_deref(),
            Some("2")
        );
        browser
            .screenshot(&shots.join("storefront-5-cart.png"))
            .await?;

        // Check out as a guest and pay on the test-mode payment page.
        browser
            .find(By::Css("a[href='/checkout']"))
            .await?
            .click()
            .await?;
        wait_for_url(&browser, "/checkout").await?;
        for (field, value) in [
            ("#email", "aisyah@example.com"),
            ("#phone", "+60123456789"),
            ("#name", "Aisyah Rahman"),
            ("#line1", "8 Lorong Kuda"),
            ("#city", "George Town"),
            ("#postcode", "10400"),
            ("#state", "Penang"),
        ] {
            browser.find(By::Css(field)).await?.send_keys(value).await?;
        }
        browser
            .find(By::Css("input[name='whatsapp_opt_in']"))
            .await?
            .click()
            .await?;
        browser
            .screenshot(&shots.join("storefront-6-checkout.png"))
            .await?;
        browser
            .find(By::Css(".checkout-form button"))
            .await?
            .click()
            .await?;
        wait_for_url(&browser, "/pay/test/").await?;
        browser
            .find(By::Css("form[action$='/pay'] button"))
            .await?
            .click()
            .await?;
        wait_for_url(&browser, "/orders/").await?;
        let status = browser.find(By::Css(".order-status")).await?.text().await?;
        assert!(status.contains("Paid"), "{status}");
        // The bus books the shipment and sends the WhatsApp confirmation
        // the shopper asked for.
        app.context.dispatcher.drain().await.unwrap();
        browser.refresh().await?;
        let page = browser.find(By::Css("main")).await?.text().await?;
        assert!(page.contains("Being packed"), "{page}");
        let messages = kedai::platform::messaging::list(&app.context.db, Some("+60123456789"), 5)
            .await
            .unwrap();
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert_eq!(messages[0].kind, "order_paid");
        browser
            .screenshot(&shots.join("storefront-7-order.png"))
            .await?;

        // Search from the header.
        let search = browser.find(By::Css("#site-search")).await?;
        search.send_keys("kopi").await?;
        browser
            .find(By::Css(".search-form button"))
            .await?
            .click()
            .await?;
        wait_for_url(&browser, "/search?q=kopi").await?;
        assert!(
            browser
                .find(By::Css("main h1"))
                .await?
                .text()
                .await?
                .contains("kopi")
        );
        assert!(!browser.find_all(By::Css(".product-card")).await?.is_empty());
        browser
            .screenshot(&shots.join("storefront-4-search.png"))
            .await?;
        Ok::<(), WebDriverError>(())
    }
    .await;
    browser.quit().await.ok();
    result.expect("the browser journey works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_signs_up_buys_and_finds_the_order_in_their_history() {
    if !browser_available() {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let (_driver, driver_url) = start_chromedriver().await;
    let browser = chrome(&driver_url).await;
    let shots = artifacts_dir();

    let result = async {
        browser
            .goto(format!("{}/account/signup", app.address))
            .await?;
        for (field, value) in [
            ("#name", "Zul Ariffin"),
            ("#email", "zul@example.com"),
            ("#phone", "+60177778888"),
            ("#password", "a long enough password"),
        ] {
            browser.find(By::Css(field)).await?.send_keys(value).await?;
        }
        browser
            .find(By::Css(".checkout-form button"))
            .await?
            .click()
            .await?;
        wait_for_url(&browser, "/account").await?;
        assert!(
            browser
                .find(By::Css("main h1"))
                .await?
                .text()
                .await?
                .contains("Zul Ariffin")
        );

        let catalog = kedai::catalog::demo::demo_catalog();
        let buyable = catalog
            .iter()
            .flat_map(|c| &c.products)
            .find(|p| p.variants.len() == 1 && p.variants[0].stock_on_hand >= 5)
            .expect("a single-variant product in stock");
        browser
            .goto(format!("{}/products/{}", app.address, buyable.slug))
            .await?;
        browser
            .find(By::Css(".add-to-cart button"))
            .await?
            .click()
            .await?;
        wait_for_url(&browser, "/cart").await?;
        browser
            .find(By::Css("a[href='/checkout']"))
            .await?
            .click()
            .await?;
        wait_for_url(&browser, "/checkout").await?;
        // Name, email and number come from the account.
        let email = browser.find(By::Css("#email")).await?.value().await?;
        assert_eq!(email.as_deref(), Some("zul@example.com"));
        for (field, value) in [
            ("#line1", "3 Jalan Sultan"),
            ("#city", "Johor Bahru"),
            ("#postcode", "80000"),
            ("#state", "Johor"),
        ] {
            browser.find(By::Css(field)).await?.send_keys(value).await?;
        }
        browser
            .find(By::Css(".checkout-form button"))
            .await?
            .click()
            .await?;
        wait_for_url(&browser, "/pay/test/").await?;
        browser
            .find(By::Css("form[action$='/pay'] button"))
            .await?
            .click()
            .await?;
        wait_for_url(&browser, "/orders/").await?;

        browser.goto(format!("{}/account", app.address)).await?;
        let history = browser
            .find(By::Css(".order-history tbody"))
            .await?
            .text()
            .await?;
        assert!(history.contains("Paid"), "{history}");
        browser
            .screenshot(&shots.join("account-1-history.png"))
            .await?;
        Ok::<(), WebDriverError>(())
    }
    .await;
    browser.quit().await.ok();
    result.expect("the account journey works");
}

/// The text of `css` once it contains `wanted` (pages change under
/// form posts; stale elements are looked up again).
async fn wait_for_text(browser: &WebDriver, css: &str, wanted: &str) -> WebDriverResult<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    loop {
        if let Ok(element) = browser.find(By::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if text.contains(wanted) {
                return Ok(text);
            }
            last = text;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never showed {wanted:?}; last seen: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An admin whose password is "correct horse battery".
async fn create_admin(
    app: &crate::helpers::TestApp,
    email: &str,
    name: &str,
    role: kedai::admin::Role,
) {
    kedai::admin::create(
        &app.context.writer,
        email,
        name,
        role,
        "correct horse battery",
    )
    .await
    .unwrap();
}

/// Signs `email` in to the back-office (password "correct horse battery").
async fn admin_sign_in(
    browser: &WebDriver,
    app: &crate::helpers::TestApp,
    email: &str,
) -> WebDriverResult<()> {
    browser.goto(format!("{}/admin/login", app.address)).await?;
    browser
        .find(By::Css("#email"))
        .await?
        .send_keys(email)
        .await?;
    browser
        .find(By::Css("#password"))
        .await?
        .send_keys("correct horse battery")
        .await?;
    browser
        .find(By::Css("form[action='/admin/login'] button"))
        .await?
        .click()
        .await?;
    // "/admin" is also in the sign-in page's own URL: wait for what only a
    // signed-in page has, the sign-out form.
    wait_for_text(browser, ".admin-logout", "Sign out").await?;
    Ok(())
}

/// An admin in headless Chromium: signs in, finds the conversation that
/// needs a person on the dashboard and in the inbox, takes it over, replies
/// on WhatsApp, releases it. Screenshots of the dashboard, the inbox and the
/// conversation are kept as artifacts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_takes_over_a_conversation_replies_and_releases_it() {
    if !browser_available() {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    create_admin(
        &app,
        "nadia@shop.test",
        "Nadia",
        kedai::admin::Role::Support,
    )
    .await;
    let phone = "+60121110070";
    crate::chat::whatsapp_signed(&app, phone, "can I talk to a human please", "SMbr1").await;
    app.context.chat.drain(100).await.unwrap();
    let (_driver, driver_url) = start_chromedriver().await;
    let browser = chrome(&driver_url).await;
    let shots = artifacts_dir();

    let result = async {
        // The dashboard sends a stranger to the sign-in page.
        browser.goto(format!("{}/admin", app.address)).await?;
        wait_for_url(&browser, "/admin/login").await?;
        admin_sign_in(&browser, &app, "nadia@shop.test").await?;
        let tiles = browser.find(By::Css(".admin-tiles")).await?.text().await?;
        assert!(tiles.contains("1\nconversations need a person"), "{tiles}");
        browser
            .screenshot(&shots.join("admin-1-dashboard.png"))
            .await?;

        browser
            .find(By::Css("a[href='/admin/conversations?filter=needs_human']"))
            .await?
            .click()
            .await?;
        wait_for_url(&browser, "filter=needs_human").await?;
        browser.screenshot(&shots.join("admin-2-inbox.png")).await?;
        browser
            .find(By::Css(".admin-table tbody a"))
            .await?
            .click()
            .await?;
        wait_for_url(&browser, "/admin/conversations/").await?;
        browser
            .find(By::Css("form[action$='/takeover'] button"))
            .await?
            .click()
            .await?;
        wait_for_text(
            &browser,
            ".conversation-state",
            "taken over by nadia@shop.test",
        )
        .await?;
        browser
            .find(By::Css("#reply"))
            .await?
            .send_keys("Hi, Nadia here. How can I help?")
            .await?;
        browser
            .find(By::Css("form[action$='/reply'] button"))
            .await?
            .click()
            .await?;
        let log = wait_for_text(&browser, ".chat-log", "Hi, Nadia here. How can I help?").await?;
        assert!(log.contains("Taken over by nadia@shop.test."), "{log}");
        // The shopper answers; the open page shows it without a reload
        // (server-sent events).
        wait_for_text(&browser, "#live-status", "Live").await?;
        let marker: String = browser
            .execute(
                "return document.title + '|' + performance.timeOrigin;",
                vec![],
            )
            .await?
            .convert()?;
        crate::chat::whatsapp_signed(&app, phone, "it is order 5521, thanks", "SMbr2").await;
        wait_for_text(&browser, ".chat-log", "it is order 5521, thanks").await?;
        let same_page: String = browser
            .execute(
                "return document.title + '|' + performance.timeOrigin;",
                vec![],
            )
            .await?
            .convert()?;
        assert_eq!(marker, same_page, "the message arrived without a reload");
        browser
            .screenshot(&shots.join("admin-3-conversation.png"))
            .await?;
        browser
            .find(By::Css("form[action$='/release'] button"))
            .await?
            .click()
            .await?;
        wait_for_text(&browser, ".conversation-state", "State: assistant").await?;
        Ok::<(), WebDriverError>(())
    }
    .await;
    browser.quit().await.ok();
    result.expect("the admin journey works");
    let sent = kedai::platform::messaging::list(&app.context.db, Some(phone), 10)
        .await
        .unwrap();
    assert!(
        sent.iter()
            .any(|m| m.body == "Hi, Nadia here. How can I help?"),
        "sent on WhatsApp"
    );
}

/// The WhatsApp simulator: an admin writes as a shopper; the message goes
/// through the real signed webhook, the queue and the assistant, and the
/// answer appears on the page (which reloads while it waits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_round_trip_gets_an_answer_from_the_assistant() {
    if !browser_available() {
        return;
    }
    let app = crate::helpers::spawn_app_with(Backend::Sqlite, &[("chat.enabled", "true")])
        .await
        .unwrap();
    crate::chat::with_demo_knowledge(&app).await;
    create_admin(
        &app,
        "nadia@shop.test",
        "Nadia",
        kedai::admin::Role::Support,
    )
    .await;
    let (_driver, driver_url) = start_chromedriver().await;
    let browser = chrome(&driver_url).await;
    let shots = artifacts_dir();
    let result = async {
        admin_sign_in(&browser, &app, "nadia@shop.test").await?;
        browser
            .find(By::Css("a[href='/admin/simulator']"))
            .await?
            .click()
            .await?;
        wait_for_url(&browser, "/admin/simulator").await?;
        browser
            .find(By::Css("#text"))
            .await?
            .send_keys("how long is delivery to sabah?")
            .await?;
        browser
            .find(By::Css(
                "form[method='post'][action='/admin/simulator'] button",
            ))
            .await?
            .click()
            .await?;
        let log = wait_for_text(&browser, ".chat-log", "4 to 7 working days").await?;
        assert!(log.contains("how long is delivery to sabah?"), "{log}");
        assert!(log.contains("[kb:"), "the answer cites its source: {log}");
        browser
            .screenshot(&shots.join("admin-4-simulator.png"))
            .await?;
        Ok::<(), WebDriverError>(())
    }
    .await;
    browser.quit().await.ok();
    result.expect("the simulator round trip works");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("kedai_webhook_accepted_total{source=\"twilio_inbound\""),
        "the message took the signed webhook"
    );
}

/// Staff in headless Chromium: open a paid order from the list, mark it
/// shipped with a tracking number, and find the shopper's WhatsApp notice
/// (sent by the event bus) in the message outbox; then upload a document
/// to the knowledge base and find it with the assistant's search box.
/// Screenshots of the order, the outbox and the search are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_ship_an_order_and_upload_a_document() {
    if !browser_available() {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    create_admin(&app, "aina@shop.test", "Aina", kedai::admin::Role::Staff).await;
    let phone = "+60121110090";
    let order =
        crate::shop::paid_order(&app.context.writer, &crate::shop::Buyer::opted_in(phone), 1).await;
    crate::shop::drain(&app).await;
    crate::chat::with_demo_knowledge(&app).await;
    let knowledge = &app.context.knowledge;
    let folder = tempfile::tempdir().unwrap();
    let document = folder.path().join("penang-pop-up.md");
    std::fs::write(
        &document,
        "---\ntitle: Our Penang pop-up\nkind: page\n---\n# Our Penang pop-up\n\n\
         Our pop-up store at Gurney Plaza in Penang opens every Saturday in December, 10am to 6pm.\n",
    )
    .unwrap();

    let (_driver, driver_url) = start_chromedriver().await;
    let browser = chrome(&driver_url).await;
    let shots = artifacts_dir();
    let result = async {
        admin_sign_in(&browser, &app, "aina@shop.test").await?;
        browser
            .find(By::Css("nav a[href='/admin/orders']"))
            .await?
            .click()
            .await?;
        wait_for_url(&browser, "/admin/orders").await?;
        browser
            .find(By::Css(format!("a[href='/admin/orders/{order}']")))
            .await?
            .click()
            .await?;
        wait_for_url(&browser, &format!("/admin/orders/{order}")).await?;
        browser.screenshot(&shots.join("admin-5-order.png")).await?;
        browser
            .find(By::Css("#tracking-number"))
            .await?
            .send_keys("MY123456789")
            .await?;
        browser
            .find(By::Css("form[action$='/ship'] button"))
            .await?
            .click()
            .await?;
        wait_for_text(&browser, "#shipment", "MY123456789").await?;
        let status = browser.find(By::Css("#order-status")).await?.text().await?;
        assert!(status.to_lowercase().contains("shipped"), "{status}");

        // The bus sends the shopper's notice; the outbox shows it.
        crate::shop::drain(&app).await;
        browser
            .find(By::Css("nav a[href='/admin/messages']"))
            .await?
            .click()
            .await?;
        wait_for_url(&browser, "/admin/messages").await?;
        browser
            .find(By::Css("#message-to"))
            .await?
            .send_keys(phone)
            .await?;
        browser
            .find(By::Css("form[action='/admin/messages'] button"))
            .await?
            .click()
            .await?;
        let outbox = wait_for_text(&browser, "#messages", "is on its way").await?;
        assert!(outbox.contains("MY123456789"), "{outbox}");
        browser
            .screenshot(&shots.join("admin-6-outbox.png"))
            .await?;

        // A document uploaded from the knowledge page is found by the
        // assistant's own search.
        browser
            .find(By::Css("nav a[href='/admin/knowledge']"))
            .await?
            .click()
            .await?;
        wait_for_url(&browser, "/admin/knowledge").await?;
        browser
            .find(By::Css("#kb-file"))
            .await?
            .send_keys(document.to_str().unwrap())
            .await?;
        browser
            .find(By::Css("#kb-upload button"))
            .await?
            .click()
            .await?;
        wait_for_url(&browser, "notice=uploaded").await?;
        knowledge.refresh().await.unwrap();
        browser
            .find(By::Css("#kb-q"))
            .await?
            .send_keys("when does the penang pop-up open?")
            .await?;
        browser
            .find(By::Css("#kb-search button"))
            .await?
            .click()
            .await?;
        let results = wait_for_text(&browser, "#kb-results", "Our Penang pop-up").await?;
        assert!(results.contains("Gurney Plaza"), "{results}");
        browser
            .screenshot(&shots.join("admin-7-knowledge-search.png"))
            .await?;
        Ok::<(), WebDriverError>(())
    }
    .await;
    browser.quit().await.ok();
    result.expect("the staff journey works");
    let sent = crate::shop::messages_to(&app, phone).await;
    assert!(
        sent.iter().any(|m| m.body.contains("MY123456789")),
        "the shipping notice went to the shopper: {sent:?}"
    );
}
