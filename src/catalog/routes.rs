//! Storefront catalog pages: parse the request, read the snapshot, render.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::media;
use super::model::{Page, PageRequest, SortOrder};
use super::read_model::SearchTerms;
use super::views::{CategoryPage, HomePage, Pagination, ProductPage, SearchPage};
use crate::app::AppContext;
use crate::web::error::AppError;
use crate::web::http::{CachePolicy, render, render_as};
use crate::web::layout::Layout;
use crate::web::visitor::Visitor;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(show_home))
        .route("/categories/{slug}", web::get().to(show_category))
        .route("/search", web::get().to(search_products))
        .route("/products/{slug}", web::get().to(show_product))
        .route("/media/products/{file}", web::get().to(show_product_image));
}

fn page_policy(ctx: &AppContext) -> CachePolicy {
    CachePolicy::Public(ctx.catalog.settings().page_max_age)
}

pub async fn show_home(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
) -> Result<HttpResponse, AppError> {
    let snapshot = ctx.catalog.snapshot();
    let mut new_arrivals = snapshot.listing(None, SortOrder::Newest);
    new_arrivals.retain(|p| !p.stock.is_sold_out());
    new_arrivals.truncate(8);
    let page = HomePage {
        layout: Layout::new(
            "Kedai — batik, kopi and everyday goods",
            &snapshot.categories,
        ),
        featured: snapshot.featured(8),
        new_arrivals,
        categories: &snapshot.categories,
    };
    render(&req, &page, page_policy(&ctx))
}

#[derive(Debug, Deserialize)]
pub struct ListingQuery {
    page: Option<u64>,
    sort: Option<String>,
}

pub async fn show_category(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    slug: web::Path<String>,
    query: web::Query<ListingQuery>,
) -> Result<HttpResponse, AppError> {
    let snapshot = ctx.catalog.snapshot();
    let category = snapshot.category_by_slug(&slug).ok_or(AppError::NotFound)?;
    let sort = SortOrder::parse(query.sort.as_deref());
    let request = PageRequest::new(query.page, ctx.catalog.settings().page_size);
    let all = snapshot.listing(Some(category.id), sort);
    let page: Page<_> = Page::slice(&all, request);
    if page.items.is_empty() && request.page > 1 {
        return Err(AppError::NotFound);
    }
    let base = format!("/categories/{}", category.slug);
    let pagination = Pagination::new(page.page, page.total_pages(), |n| {
        listing_url(&base, sort, n)
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
    render(&req, &view, page_policy(&ctx))
}

fn listing_url(base: &str, sort: SortOrder, page: u64) -> String {
    match (sort, page) {
        (SortOrder::Featured, 1) => base.to_string(),
        (SortOrder::Featured, n) => format!("{base}?page={n}"),
        (sort, 1) => format!("{base}?sort={}", sort.as_str()),
        (sort, n) => format!("{base}?sort={}&page={n}", sort.as_str()),
    }
}

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
    page: Option<u64>,
}

pub async fn search_products(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    query: web::Query<SearchQuery>,
) -> Result<HttpResponse, AppError> {
    if query.q.len() > 500 {
        return Err(AppError::BadRequest(
            "That search is too long; try a few words.".into(),
        ));
    }
    let snapshot = ctx.catalog.snapshot();
    let terms = SearchTerms::parse(&query.q);
    let hits = if terms.is_empty() {
        None
    } else {
        Some(ctx.catalog.search(&terms).await?)
    };
    let products: Vec<_> = hits
        .iter()
        .flat_map(|h| h.product_ids.iter())
        .filter_map(|id| snapshot.product_by_id(*id))
        .collect();
    let request = PageRequest::new(query.page, ctx.catalog.settings().page_size);
    let page: Page<_> = Page::slice(&products, request);
    let shown_query = query.q.trim();
    let encoded: String = url::form_urlencoded::byte_serialize(shown_query.as_bytes()).collect();
    let pagination = Pagination::new(page.page, page.total_pages(), |n| {
        if n == 1 {
            format!("/search?q={encoded}")
        } else {
            format!("/search?q={encoded}&page={n}")
        }
    });
    let title = if shown_query.is_empty() {
        "Search — Kedai".to_string()
    } else {
        format!("“{shown_query}” — Search — Kedai")
    };
    let mut layout = Layout::new(title, &snapshot.categories);
    layout.search_query = shown_query;
    let view = SearchPage {
        layout,
        query: shown_query,
        corrected: hits.as_ref().and_then(|h| h.corrected.as_deref()),
        page,
        pagination,
    };
    render(&req, &view, page_policy(&ctx))
}

pub async fn show_product(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    slug: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let snapshot = ctx.catalog.snapshot();
    let product = snapshot.product_by_slug(&slug).ok_or(AppError::NotFound)?;
    let mut layout = Layout::new(format!("{} — Kedai", product.name), &snapshot.categories)
        .describe(product.description.clone());
    layout.active_category = Some(&product.category_slug);
    // The add-to-cart form carries the visitor's CSRF token, so the page
    // is personal: browsers revalidate it, shared caches never keep it.
    let visitor = Visitor::of(&req);
    let csrf_token = ctx.csrf.token_for(&visitor);
    let view = ProductPage {
        layout,
        product,
        related: snapshot.related(product, 4),
        csrf_token: &csrf_token,
        max_quantity: crate::cart::MAX_QUANTITY,
    };
    let mut response = render(&req, &view, CachePolicy::Private)?;
    visitor.remember(&mut response, ctx.secure_cookies())?;
    Ok(response)
}

pub async fn show_product_image(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    file: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let slug = file.strip_suffix(".svg").ok_or(AppError::NotFound)?;
    let snapshot = ctx.catalog.snapshot();
    let product = snapshot.product_by_slug(slug).ok_or(AppError::NotFound)?;
    let image = media::product_image(product);
    render_as(
        &req,
        &image,
        "image/svg+xml",
        CachePolicy::Public(std::time::Duration::from_secs(86_400)),
    )
}
