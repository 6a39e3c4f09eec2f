//! The ceiling for the storefront's category page: a bare actix-web server
//! that renders the same `CategoryPage` template from an in-memory demo
//! snapshot, with no database, no middleware, no `ETag` and no
//! `Cache-Control`.
//!
//! `scripts/bench-catalog` drives this next to the real server and prints
//! the real category page's throughput as a share of this one, so the cost
//! of everything around the template (middleware, logging, metrics, caching
//! headers, snapshot access) is visible as a single ratio.
//!
//! ```text
//! cargo run --release --example bare_catalog -- 127.0.0.1:8081
//! curl http://127.0.0.1:8081/categories/batik-apparel
//! ```
//!
//! Like the real server with `server.workers = 0`, it runs one worker per
//! CPU core (actix-web's default).

use std::net::SocketAddr;

use actix_web::{App, HttpResponse, HttpServer, web};
use askama::Template;
use kedai::catalog::CatalogSnapshot;
use kedai::catalog::demo::demo_snapshot;
use kedai::catalog::model::{Page, PageRequest, SortOrder};
use kedai::catalog::views::{CategoryPage, Pagination};
use kedai::web::layout::Layout;

/// Products per page, as `catalog.page_size` in `config/default.toml`.
const PAGE_SIZE: u64 = 24;
/// As `catalog.low_stock_threshold` in `config/default.toml`.
const LOW_STOCK_THRESHOLD: i32 = 5;

/// Mirrors `catalog::routes::show_category` for page 1 in the featured
/// order, minus everything that is not rendering.
async fn show_category(
    snapshot: web::Data<CatalogSnapshot>,
    slug: web::Path<String>,
) -> HttpResponse {
    let Some(category) = snapshot.category_by_slug(&slug) else {
        return HttpResponse::NotFound().finish();
    };
    let sort = SortOrder::Featured;
    let request = PageRequest::new(None, PAGE_SIZE);
    let all = snapshot.listing(Some(category.id), sort);
    let page: Page<_> = Page::slice(&all, request);
    let base = format!("/categories/{}", category.slug);
    let pagination = Pagination::new(page.page, page.total_pages(), |n| {
        if n == 1 {
            base.clone()
        } else {
            format!("{base}?page={n}")
        }
    });
    let mut layout = Layout::new(format!("{} — Kedai", category.name), &snapshot.categories)
        .describe(category.description.clone());
    layout.active_category = Some(&category.slug);
    let view = CategoryPage {
        layout,
        category,
        page,
        sort,
        sort_options: &SortOrder::ALL,
        pagination,
    };
    match view.render() {
        Ok(body) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .body(body),
        Err(error) => HttpResponse::InternalServerError().body(error.to_string()),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let bind: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".to_string())
        .parse()
        .map_err(|error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad address: {error}"),
            )
        })?;
    let snapshot = web::Data::new(demo_snapshot(LOW_STOCK_THRESHOLD));
    eprintln!(
        "bare_catalog: {} products in {} categories, listening on http://{bind}",
        snapshot.product_count(),
        snapshot.categories.len()
    );
    HttpServer::new(move || {
        App::new()
            .app_data(snapshot.clone())
            .route("/categories/{slug}", web::get().to(show_category))
    })
    .bind(bind)?
    .run()
    .await
}
