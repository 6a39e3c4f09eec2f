//! What a shopper sees: home, categories, search, product pages, errors.

use kedai::catalog::demo::demo_catalog;

use crate::helpers::{TestApp, between, card_names, card_prices};

crate::on_both_databases!(
    home_page_shows_featured_products_and_every_category,
    pages_are_cacheable_with_etag_and_304,
    category_page_paginates,
    category_page_sorts_by_price_name_and_newest,
    product_page_shows_variants_prices_and_stock,
    sold_out_products_say_so,
    search_finds_names_and_descriptions_ranked_and_case_insensitive,
    search_corrects_typos_and_survives_hostile_input,
    unknown_pages_get_the_shops_404,
    internal_errors_get_the_shops_500_without_details,
    malformed_query_parameters_get_400,
    product_images_are_generated_svg,
    stock_changes_reach_the_product_page,
);

async fn home_page_shows_featured_products_and_every_category(app: TestApp) {
    let (status, html) = app.page("/").await;
    assert_eq!(status, 200);
    assert!(html.contains("<h2 id=\"featured-heading\">Featured</h2>"));
    let featured = card_names(&html);
    assert!(
        featured.len() >= 8,
        "featured and new arrivals: {featured:?}"
    );
    for category in demo_catalog() {
        assert!(
            html.contains(&format!("href=\"/categories/{}\"", category.slug)),
            "link to {}",
            category.slug
        );
    }
    assert!(html.contains("22 products"));
}

async fn pages_are_cacheable_with_etag_and_304(app: TestApp) {
    for path in ["/", "/categories/footwear", "/search?q=kopi"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let cache_control = response.headers()["cache-control"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(cache_control, "public, max-age=30", "{path}");
        assert!(
            response.headers().get("set-cookie").is_none(),
            "{path} is the same for everyone"
        );
        let etag = response.headers()["etag"].to_str().unwrap().to_string();
        assert!(etag.starts_with("W/\""), "{etag}");

        let revalidated = app
            .client
            .get(format!("{}{}", app.address, path))
            .header("If-None-Match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(revalidated.status(), 304, "{path}");
        assert!(revalidated.bytes().await.unwrap().is_empty());

        let stale = app
            .client
            .get(format!("{}{}", app.address, path))
            .header("If-None-Match", "W/\"0000000000000000\"")
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), 200, "{path}");
    }

    // The product page carries the visitor's CSRF token: personal, but the
    // browser can still revalidate it.
    let path = "/products/kelantan-hand-drawn-batik-shirt";
    let first = app.get(path).await;
    assert_eq!(first.headers()["cache-control"], "private, no-cache");
    let cookie = crate::helpers::visitor_cookie(&first).expect("a new visitor gets a cookie");
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let again = app
        .client
        .get(format!("{}{}", app.address, path))
        .header("Cookie", &cookie)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(
        again.headers().get("set-cookie").is_none(),
        "a known visitor keeps the cookie"
    );
}

async fn category_page_paginates(app: TestApp) {
    // 22 products at 24 a page: one page, no pagination links.
    let (status, html) = app.page("/categories/batik-apparel").await;
    assert_eq!(status, 200);
    assert_eq!(card_names(&html).len(), 22);
    assert!(html.contains("Showing 1–22 of 22 products"));
    assert!(!html.contains("class=\"pagination\""));

    // The same category at 10 a page, on a replica configured so.
    let small =
        crate::helpers::spawn_on(app.database.clone(), &[("catalog.page_size", "10")]).await;
    let (_, first) = small.page("/categories/batik-apparel").await;
    let (_, third) = small.page("/categories/batik-apparel?page=3").await;
    assert_eq!(card_names(&first).len(), 10);
    assert_eq!(card_names(&third).len(), 2);
    assert!(first.contains("rel=\"next\""));
    assert!(first.contains("href=\"/categories/batik-apparel?page=2\""));
    assert!(third.contains("Showing 21–22 of 22 products"));
    let mut all = card_names(&first);
    all.extend(card_names(
        &small.page("/categories/batik-apparel?page=2").await.1,
    ));
    all.extend(card_names(&third));
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 22, "pages do not overlap");
    let (status, _) = small.page("/categories/batik-apparel?page=4").await;
    assert_eq!(status, 404);
}

async fn category_page_sorts_by_price_name_and_newest(app: TestApp) {
    let (_, html) = app.page("/categories/coffee-tea?sort=price_asc").await;
    let prices = card_prices(&html);
    assert_eq!(prices.len(), 22);
    assert!(prices.windows(2).all(|w| w[0] <= w[1]), "{prices:?}");
    assert!(html.contains("<option value=\"price_asc\" selected>"));

    let (_, html) = app.page("/categories/coffee-tea?sort=price_desc").await;
    let prices = card_prices(&html);
    assert!(prices.windows(2).all(|w| w[0] >= w[1]), "{prices:?}");

    let (_, html) = app.page("/categories/coffee-tea?sort=name").await;
    let names: Vec<String> = card_names(&html).iter().map(|n| n.to_lowercase()).collect();
    assert!(names.windows(2).all(|w| w[0] <= w[1]), "{names:?}");

    // Newest first, checked against the demo data's dates.
    let (_, html) = app.page("/categories/coffee-tea?sort=newest").await;
    let names = card_names(&html);
    let catalog = demo_catalog();
    let coffee = catalog.iter().find(|c| c.slug == "coffee-tea").unwrap();
    let date_of = |name: &str| {
        coffee
            .products
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .created_at
    };
    assert!(names.windows(2).all(|w| date_of(&w[0]) >= date_of(&w[1])));

    // An unknown sort order falls back to the default instead of failing.
    let (status, _) = app.page("/categories/coffee-tea?sort=drop_tables").await;
    assert_eq!(status, 200);
}

async fn product_page_shows_variants_prices_and_stock(app: TestApp) {
    let catalog = demo_catalog();
    let product = &catalog[0].products[0];
    let (status, html) = app.page(&format!("/products/{}", product.slug)).await;
    assert_eq!(status, 200);
    assert!(html.contains(&format!("<h1>{}</h1>", product.name)));
    assert_eq!(product.variants.len(), 10, "5 sizes x 2 colours");
    for variant in &product.variants {
        assert!(html.contains(&variant.sku), "{}", variant.sku);
    }
    let price = format!(
        "RM {}.{:02}",
        product.variants[0].price_minor / 100,
        product.variants[0].price_minor % 100
    );
    assert!(html.contains(&price), "{price}");
    assert!(html.contains("<th scope=\"col\">Size</th>"));
    assert!(html.contains("<th scope=\"col\">Colour</th>"));
    assert!(html.contains(&format!("href=\"/categories/{}\"", catalog[0].slug)));
    // Related products from the same category.
    assert!(html.contains("More from Batik &#38; Apparel"));
}

async fn sold_out_products_say_so(app: TestApp) {
    let catalog = demo_catalog();
    let sold_out = catalog
        .iter()
        .flat_map(|c| &c.products)
        .find(|p| p.variants.iter().all(|v| v.stock_on_hand == 0))
        .expect("the demo has sold-out products");
    let (_, html) = app.page(&format!("/products/{}", sold_out.slug)).await;
    assert!(html.contains("stock-badge sold-out\">Sold out"));
    let total = |p: &kedai::catalog::repo::NewProduct| {
        p.variants.iter().map(|v| v.stock_on_hand).sum::<i32>()
    };
    let low = catalog
        .iter()
        .flat_map(|c| &c.products)
        .find(|p| (1..=5).contains(&total(p)))
        .expect("the demo has low-stock products");
    let (_, html) = app.page(&format!("/products/{}", low.slug)).await;
    assert!(html.contains(&format!("stock-badge low-stock\">Only {} left", total(low))));
}

async fn search_finds_names_and_descriptions_ranked_and_case_insensitive(app: TestApp) {
    let (status, html) = app.page("/search?q=backpack").await;
    assert_eq!(status, 200);
    let names = card_names(&html);
    assert!(!names.is_empty());
    // Products named after the word rank above ones that only mention it.
    assert!(names[0].to_lowercase().contains("backpack"), "{names:?}");

    let (_, upper) = app.page("/search?q=BACKPACK").await;
    assert_eq!(card_names(&upper), names, "case does not matter");

    // Plural and prefix forms find the same word.
    let (_, plural) = app.page("/search?q=backpacks").await;
    assert!(
        card_names(&plural)
            .iter()
            .any(|n| n.to_lowercase().contains("backpack"))
    );

    // A word found only in descriptions.
    let catalog = demo_catalog();
    let with_poplin: Vec<&str> = catalog
        .iter()
        .flat_map(|c| &c.products)
        .filter(|p| p.description.to_lowercase().contains("poplin"))
        .map(|p| p.name.as_str())
        .collect();
    assert!(!with_poplin.is_empty());
    let (_, html) = app.page("/search?q=poplin").await;
    let found = card_names(&html);
    for name in with_poplin {
        assert!(found.iter().any(|f| f == name), "{name} in {found:?}");
    }

    // Several words narrow the results.
    let (_, one) = app.page("/search?q=batik").await;
    let (_, two) = app.page("/search?q=batik+shirt").await;
    assert!(card_names(&two).len() < card_names(&one).len());
    assert!(!card_names(&two).is_empty());
}

async fn search_corrects_typos_and_survives_hostile_input(app: TestApp) {
    let (status, html) = app.page("/search?q=bakcpack").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("we searched for <strong>backpack</strong>"),
        "{}",
        &html[..200]
    );
    assert!(!card_names(&html).is_empty());

    let (status, html) = app.page("/search?q=zzqqxxvv").await;
    assert_eq!(status, 200);
    assert!(html.contains("Nothing matched"));
    assert!(card_names(&html).is_empty());

    for hostile in [
        "%22*%29(",
        "NEAR(a+b)",
        "a%27%3B+DROP+TABLE+products%3B--",
        "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "kopi:*+%7C+!",
    ] {
        let (status, html) = app.page(&format!("/search?q={hostile}")).await;
        assert_eq!(status, 200, "{hostile}");
        assert!(
            !html.contains("<script>alert(1)</script>"),
            "output is escaped"
        );
    }
    let (status, _) = app.page(&format!("/search?q={}", "a".repeat(600))).await;
    assert_eq!(status, 400);

    let (status, html) = app.page("/search").await;
    assert_eq!(status, 200);
    assert!(html.contains("Search the shop"));
}

async fn unknown_pages_get_the_shops_404(app: TestApp) {
    for path in [
        "/products/no-such-thing",
        "/categories/no-such-category",
        "/definitely/not/here",
    ] {
        let (status, html) = app.page(path).await;
        assert_eq!(status, 404, "{path}");
        assert!(html.contains("Page not found"), "{path}");
        assert!(html.contains("/static/css/kedai."), "styled like the shop");
    }
}

async fn internal_errors_get_the_shops_500_without_details(app: TestApp) {
    use sea_orm::ConnectionTrait;
    // Break full-text search underneath the running app.
    let sql = match app.database.kind() {
        "sqlite" => "DROP TABLE products_fts",
        _ => "ALTER TABLE products DROP COLUMN search_vector",
    };
    app.context.db.execute_unprepared(sql).await.unwrap();
    let (status, html) = app.page("/search?q=kettle").await;
    assert_eq!(status, 500);
    assert!(html.contains("Something went wrong"));
    assert!(html.contains("/static/css/kedai."), "styled like the shop");
    assert!(
        !html.contains("products_fts") && !html.contains("search_vector"),
        "no internals shown"
    );
    // Pages served from the snapshot keep working.
    assert_eq!(app.page("/categories/footwear").await.0, 200);
}

async fn malformed_query_parameters_get_400(app: TestApp) {
    let (status, html) = app.page("/categories/footwear?page=abc").await;
    assert_eq!(status, 400);
    assert!(html.contains("invalid parameter"));
}

async fn product_images_are_generated_svg(app: TestApp) {
    let (_, html) = app.page("/products/kelantan-hand-drawn-batik-shirt").await;
    let src = between(&html, "<img src=\"/media/", "\"")[0].to_string();
    let response = app.get(&format!("/media/{src}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/svg+xml");
    let svg = response.text().await.unwrap();
    assert!(svg.starts_with("<svg"));
    assert!(svg.contains("Batik Shirt"));
    assert_eq!(app.get("/media/products/nope.svg").await.status(), 404);
}

async fn stock_changes_reach_the_product_page(app: TestApp) {
    let catalog = demo_catalog();
    let product = catalog
        .iter()
        .flat_map(|c| &c.products)
        .find(|p| p.variants.len() == 1 && p.variants[0].stock_on_hand > 10)
        .unwrap();
    let path = format!("/products/{}", product.slug);
    let (_, before) = app.page(&path).await;
    assert!(before.contains("stock-badge in-stock\">In stock"));

    let stamp = app.context.catalog.snapshot().stamp;
    assert!(
        app.context
            .catalog
            .set_stock(&product.variants[0].sku, 0)
            .await
            .unwrap()
    );
    // The background refresh (every 100 ms in tests) may see the change
    // first; either way it is picked up.
    let reloaded = app.context.catalog.refresh_if_changed().await.unwrap();
    assert!(reloaded || app.context.catalog.snapshot().stamp != stamp);
    let (_, after) = app.page(&path).await;
    assert!(after.contains("stock-badge sold-out\">Sold out"));
    // Nothing changed since: no reload.
    assert!(!app.context.catalog.refresh_if_changed().await.unwrap());
}
