//! The back-office's products and stock: the product list (search by name
//! or SKU, category, active or archived, stock totals and prices) with its
//! low-stock view; creating a product with its first variant; a product's
//! page with its fields, variants, stock adjustments and stock ledger;
//! archiving and bringing a product back.
//!
//! Everyone signed in may look; changing anything needs
//! `Permission::Manage` (owners and staff). Every change goes through the
//! catalog module (`catalog::create_product`, `catalog::adjust_stock`, …),
//! which writes it in one transaction that the replicas' snapshots and the
//! knowledge base's product documents follow, and is audited here with
//! the product or variant before and after. A form with a mistake comes
//! back (422) with the message and what was typed.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use serde_json::json;

use super::routes::{AdminLayout, admin, layout, page, require, when};
use super::{AdminUser, Permission};
use crate::app::AppContext;
use crate::catalog::edit::{self, price_input};
use crate::catalog::{
    Adjustment, EditError, ProductDraft, ProductFilter, ProductRecord, ProductStatus, StockReason,
    VariantDraft, VariantRecord,
};
use crate::web::error::AppError;
use crate::web::http::see_other;
use crate::web::visitor::{Visitor, verified_visitor};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/products", web::get().to(list_products))
        .route("/admin/products", web::post().to(create_product))
        .route("/admin/products/new", web::get().to(new_product))
        .route("/admin/products/{id}", web::get().to(show_product))
        .route("/admin/products/{id}", web::post().to(update_product))
        .route(
            "/admin/products/{id}/archive",
            web::post().to(archive_product),
        )
        .route(
            "/admin/products/{id}/unarchive",
            web::post().to(unarchive_product),
        )
        .route("/admin/products/{id}/variants", web::post().to(add_variant))
        .route(
            "/admin/products/{id}/variants/{variant}",
            web::post().to(update_variant),
        )
        .route(
            "/admin/products/{id}/variants/{variant}/stock",
            web::post().to(adjust_stock),
        );
}

const PER_PAGE: u64 = 50;
/// The most rows of the low-stock list, and of a product's ledger.
const LOW_STOCK_ROWS: u64 = 500;
const LEDGER_ROWS: u64 = 500;
const LEDGER_ROWS_PER_VARIANT: usize = 20;

fn internal(error: impl Into<anyhow::Error>) -> AppError {
    AppError::Internal(error.into())
}

fn status_label(status: ProductStatus) -> &'static str {
    match status {
        ProductStatus::Active => "Active",
        ProductStatus::Archived => "Archived",
    }
}

fn audit_target_product(id: i64) -> String {
    format!("product:{id}")
}

async fn audit(
    ctx: &AppContext,
    admin: &AdminUser,
    action: &str,
    target: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> Result<(), AppError> {
    super::record(&ctx.writer, admin, action, target, before, after)
        .await
        .map_err(internal)
}

async fn product_or_404(ctx: &AppContext, id: i64) -> Result<ProductRecord, AppError> {
    crate::catalog::product_record(&ctx.db, id)
        .await
        .map_err(internal)?
        .ok_or(AppError::NotFound)
}

fn to_json(value: &impl serde::Serialize) -> Option<serde_json::Value> {
    serde_json::to_value(value).ok()
}

struct CategoryOption {
    id: String,
    name: String,
    selected: bool,
}

async fn category_options(
    ctx: &AppContext,
    selected: &str,
) -> Result<Vec<CategoryOption>, AppError> {
    Ok(crate::catalog::category_choices(&ctx.db)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|(id, name)| {
            let id = id.to_string();
            CategoryOption {
                selected: id == selected,
                id,
                name,
            }
        })
        .collect())
}

// ---------------------------------------------------------------------------
// The list and the low-stock view.

struct ProductRow {
    id: i64,
    name: String,
    sku_hint: String,
    category: String,
    status: &'static str,
    archived: bool,
    variants: usize,
    on_hand: i64,
    reserved: i64,
    available: i64,
    prices: String,
}

struct LowStockRow {
    product_id: i64,
    product_name: String,
    sku: String,
    title: String,
    on_hand: i32,
    reserved: i32,
    available: i32,
}

#[derive(Template)]
#[template(path = "admin/products.html")]
struct ProductsPage<'a> {
    layout: AdminLayout<'a>,
    query: ProductsQuery,
    categories: Vec<CategoryOption>,
    rows: Vec<ProductRow>,
    total: u64,
    page: u64,
    pages: u64,
    filter_query: String,
    /// The low-stock view (`?stock=low`) instead of the list.
    low_stock: Option<Vec<LowStockRow>>,
    threshold: i32,
    can_manage: bool,
}

#[derive(Debug, Default, Deserialize)]
struct ProductsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    category: String,
    /// `active`, `archived`, or anything else for both.
    #[serde(default)]
    status: String,
    /// `low` for the low-stock view.
    #[serde(default)]
    stock: String,
    #[serde(default)]
    page: Option<u64>,
}

async fn list_products(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    query: web::Query<ProductsQuery>,
) -> Result<HttpResponse, AppError> {
    let admin = admin!(req, ctx, Permission::View);
    let query = query.into_inner();
    let threshold = ctx.settings.catalog.low_stock_threshold;
    let low_stock = if query.stock == "low" {
        Some(
            crate::catalog::low_stock(&ctx.db, threshold, LOW_STOCK_ROWS)
                .await
                .map_err(internal)?
                .into_iter()
                .map(|v| LowStockRow {
                    available: v.available(),
                    product_id: v.product_id,
                    product_name: v.product_name,
                    sku: v.sku,
                    title: v.title,
                    on_hand: v.stock_on_hand,
                    reserved: v.reserved,
                })
                .collect(),
        )
    } else {
        None
    };
    let filter = ProductFilter {
        search: query.q.chars().take(200).collect(),
        category_id: query.category.parse().ok(),
        status: ProductStatus::parse(&query.status),
    };
    let page_number = query.page.unwrap_or(1).clamp(1, 100_000);
    let (products, total) = if low_stock.is_some() {
        (Vec::new(), 0)
    } else {
        crate::catalog::list_products(&ctx.db, &filter, page_number, PER_PAGE)
            .await
            .map_err(internal)?
    };
    let search = filter.search.trim().to_ascii_uppercase();
    let rows = products
        .into_iter()
        .map(|p| ProductRow {
            available: p.available(),
            prices: p.price_range(),
            sku_hint: String::new(),
            id: p.id,
            category: p.category_name,
            status: status_label(p.status),
            archived: p.status == ProductStatus::Archived,
            variants: p.variants,
            on_hand: p.on_hand,
            reserved: p.reserved,
            name: p.name,
        })
        .map(|mut row| {
            // A search by SKU says which SKU matched only when the name did not.
            if !search.is_empty() && !row.name.to_ascii_uppercase().contains(&search) {
                row.sku_hint = format!("SKU matches “{}”", filter.search.trim());
            }
            row
        })
        .collect();
    let visitor = Visitor::of(&req);
    let template = ProductsPage {
        layout: layout(&ctx, &visitor, "Products", Some(&admin), "products"),
        categories: category_options(&ctx, &query.category).await?,
        rows,
        total,
        page: page_number,
        pages: total.div_ceil(PER_PAGE).max(1),
        filter_query: url::form_urlencoded::Serializer::new(String::new())
            .append_pair("q", &query.q)
            .append_pair("category", &query.category)
            .append_pair("status", &query.status)
            .finish(),
        low_stock,
        threshold,
        can_manage: admin.role.allows(Permission::Manage),
        query,
    };
    page(&req, &ctx, &visitor, &template, StatusCode::OK)
}

// ---------------------------------------------------------------------------
// Creating a product.

/// A product's fields as typed.
#[derive(Debug, Default, Clone, Deserialize)]
struct ProductFields {
    #[serde(default)]
    name: String,
    #[serde(default)]
    category_id: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: String,
    /// A checked box posts "on".
    #[serde(default)]
    featured: Option<String>,
}

impl ProductFields {
    fn of(product: &ProductRecord) -> Self {
        ProductFields {
            name: product.name.clone(),
            category_id: product.category_id.to_string(),
            description: product.description.clone(),
            tags: product.tags.clone(),
            featured: product.featured.then(|| "on".to_string()),
        }
    }

    fn featured(&self) -> bool {
        self.featured.is_some()
    }

    fn parse(&self) -> Result<ProductDraft, EditError> {
        ProductDraft::parse(
            &self.name,
            &self.category_id,
            &self.description,
            &self.tags,
            self.featured(),
        )
    }
}

/// A variant's fields as typed.
#[derive(Debug, Default, Clone, Deserialize)]
struct VariantFields {
    #[serde(default)]
    sku: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    size: String,
    #[serde(default)]
    colour: String,
    #[serde(default)]
    price: String,
    #[serde(default)]
    opening_stock: String,
}

impl VariantFields {
    fn of(variant: &VariantRecord) -> Self {
        VariantFields {
            sku: variant.sku.clone(),
            title: variant.title.clone(),
            size: variant.size.clone().unwrap_or_default(),
            colour: variant.colour.clone().unwrap_or_default(),
            price: price_input(variant.price.minor),
            opening_stock: String::new(),
        }
    }

    fn parse(&self, currency: crate::catalog::model::Currency) -> Result<VariantDraft, EditError> {
        VariantDraft::parse(
            &self.sku,
            &self.title,
            &self.size,
            &self.colour,
            &self.price,
            currency,
        )
    }
}

#[derive(Template)]
#[template(path = "admin/product_new.html")]
struct NewProductPage<'a> {
    layout: AdminLayout<'a>,
    categories: Vec<CategoryOption>,
    product: ProductFields,
    variant: VariantFields,
    currency: &'static str,
    error: Option<String>,
}

async fn new_product_page(
    req: &HttpRequest,
    ctx: &AppContext,
    admin: &AdminUser,
    form: &NewProductForm,
    error: Option<String>,
) -> Result<HttpResponse, AppError> {
    let visitor = Visitor::of(req);
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let template = NewProductPage {
        layout: layout(ctx, &visitor, "New product", Some(admin), "products"),
        categories: category_options(ctx, &form.product.category_id).await?,
        product: form.product.clone(),
        variant: form.variant.clone(),
        currency: ctx.settings.shop.currency().code(),
        error,
    };
    page(req, ctx, &visitor, &template, status)
}

async fn new_product(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
) -> Result<HttpResponse, AppError> {
    let admin = admin!(req, ctx, Permission::Manage);
    new_product_page(&req, &ctx, &admin, &NewProductForm::default(), None).await
}

#[derive(Debug, Default, Deserialize)]
struct NewProductForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(flatten)]
    product: ProductFields,
    #[serde(flatten)]
    variant: VariantFields,
}

async fn create_product(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    form: web::Form<NewProductForm>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let admin = admin!(req, ctx, Permission::Manage);
    let currency = ctx.settings.shop.currency();
    let checked = form.product.parse().and_then(|product| {
        let variant = form.variant.parse(currency)?;
        let opening = edit::parse_opening_stock(&form.variant.opening_stock)?;
        Ok((product, variant, opening))
    });
    let created = match checked {
        Ok((product, variant, opening)) => crate::catalog::create_product(
            &ctx.writer,
            &product,
            &variant,
            opening,
            currency,
            &admin.email,
        )
        .await
        .map(|id| (id, product, variant, opening)),
        Err(error) => Err(error),
    };
    match created {
        Ok((id, product, variant, opening)) => {
            let record = crate::catalog::product_record(&ctx.db, id)
                .await
                .map_err(internal)?;
            audit(
                &ctx,
                &admin,
                "product_create",
                &audit_target_product(id),
                None,
                Some(json!({
                    "product": record.as_ref().and_then(to_json).unwrap_or_else(|| json!(product)),
                    "variant": variant,
                    "opening_stock": opening,
                })),
            )
            .await?;
            Ok(see_other(format!("/admin/products/{id}?notice=created")))
        }
        Err(error) if error.is_correctable() => {
            new_product_page(
                &req,
                &ctx,
                &admin,
                &form.into_inner(),
                Some(error.to_string()),
            )
            .await
        }
        Err(error) => Err(internal(error)),
    }
}

// ---------------------------------------------------------------------------
// A product's page.

struct LedgerRow {
    at: String,
    delta: String,
    after: i32,
    reason: String,
    who: String,
    order: Option<(String, String)>,
    note: String,
}

/// The stock form's fields as typed.
#[derive(Debug, Default, Clone, Deserialize)]
struct StockFields {
    #[serde(default)]
    delta: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    note: String,
}

struct VariantRow {
    id: i64,
    sku: String,
    title: String,
    price: String,
    on_hand: i32,
    reserved: i32,
    available: i32,
    low: bool,
    edit: VariantFields,
    edit_error: Option<String>,
    stock: StockFields,
    stock_error: Option<String>,
    ledger: Vec<LedgerRow>,
}

#[derive(Template)]
#[template(path = "admin/product.html")]
struct ProductPage<'a> {
    layout: AdminLayout<'a>,
    id: i64,
    name: String,
    slug: String,
    status: &'static str,
    archived: bool,
    categories: Vec<CategoryOption>,
    fields: ProductFields,
    product_error: Option<String>,
    variants: Vec<VariantRow>,
    new_variant: VariantFields,
    new_variant_error: Option<String>,
    reasons: Vec<(&'static str, &'static str)>,
    currency: &'static str,
    can_manage: bool,
    notice: Option<&'static str>,
}

/// A form on the product page that came back with a mistake.
enum Failed {
    Product(ProductFields, String),
    NewVariant(VariantFields, String),
    Variant(i64, VariantFields, String),
    Stock(i64, StockFields, String),
}

fn notice_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "created" => "Product created. It shows on the storefront within moments.",
        "saved" => "Saved. The storefront follows within moments.",
        "archived" => "Archived: hidden from the storefront and search; past orders still show it.",
        "unarchived" => "Back on the storefront.",
        "unchanged" => "Nothing changed.",
        "variant_added" => "Variant added.",
        "variant_saved" => "Variant saved.",
        "stock_adjusted" => "Stock adjusted and written to the ledger.",
        _ => return None,
    })
}

#[derive(Debug, Deserialize)]
struct NoticeQuery {
    #[serde(default)]
    notice: Option<String>,
}

async fn product_page(
    req: &HttpRequest,
    ctx: &AppContext,
    admin: &AdminUser,
    product: ProductRecord,
    failed: Option<Failed>,
    notice: Option<&'static str>,
) -> Result<HttpResponse, AppError> {
    let threshold = ctx.settings.catalog.low_stock_threshold;
    let variant_ids: Vec<i64> = product.variants.iter().map(|v| v.id).collect();
    let ledger = crate::catalog::stock_ledger(&ctx.db, &variant_ids, LEDGER_ROWS)
        .await
        .map_err(internal)?;
    let order_ids: Vec<i64> = ledger.iter().filter_map(|e| e.order_id).collect();
    let public_ids = if order_ids.is_empty() {
        HashMap::new()
    } else {
        crate::orders::public_ids(&ctx.db, &order_ids)
            .await
            .map_err(internal)?
    };
    let offset = ctx.settings.shop.offset();
    let mut ledger_by_variant: HashMap<i64, Vec<LedgerRow>> = HashMap::new();
    for entry in ledger {
        let rows = ledger_by_variant.entry(entry.variant_id).or_default();
        if rows.len() >= LEDGER_ROWS_PER_VARIANT {
            continue;
        }
        rows.push(LedgerRow {
            at: when(entry.created_at.to_offset(offset)),
            delta: format!("{:+}", entry.delta),
            after: entry.stock_after,
            reason: entry.reason_label().to_string(),
            who: entry.admin_email.clone().unwrap_or_default(),
            order: entry.order_id.map(|id| match public_ids.get(&id) {
                Some(public) => (
                    format!("/admin/orders/{public}"),
                    format!("order {}", public.get(..8).unwrap_or(public)),
                ),
                None => (String::new(), format!("order {id}")),
            }),
            note: entry.note,
        });
    }

    let (mut fields, mut product_error) = (ProductFields::of(&product), None);
    let (mut new_variant, mut new_variant_error) = (VariantFields::default(), None);
    let mut variant_failure: Option<(i64, VariantFields, String)> = None;
    let mut stock_failure: Option<(i64, StockFields, String)> = None;
    let status = if failed.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    match failed {
        Some(Failed::Product(typed, message)) => {
            fields = typed;
            product_error = Some(message);
        }
        Some(Failed::NewVariant(typed, message)) => {
            new_variant = typed;
            new_variant_error = Some(message);
        }
        Some(Failed::Variant(id, typed, message)) => variant_failure = Some((id, typed, message)),
        Some(Failed::Stock(id, typed, message)) => stock_failure = Some((id, typed, message)),
        None => {}
    }
    let variants = product
        .variants
        .iter()
        .map(|v| {
            let (edit, edit_error) = match variant_failure.take_if(|(id, _, _)| *id == v.id) {
                Some((_, typed, message)) => (typed, Some(message)),
                None => (VariantFields::of(v), None),
            };
            let (stock, stock_error) = match stock_failure.take_if(|(id, _, _)| *id == v.id) {
                Some((_, typed, message)) => (typed, Some(message)),
                None => (StockFields::default(), None),
            };
            VariantRow {
                id: v.id,
                sku: v.sku.clone(),
                title: v.title.clone(),
                price: v.price.to_string(),
                on_hand: v.stock_on_hand,
                reserved: v.reserved,
                available: v.available(),
                low: v.available() <= threshold,
                edit,
                edit_error,
                stock,
                stock_error,
                ledger: ledger_by_variant.remove(&v.id).unwrap_or_default(),
            }
        })
        .collect();
    let currency = product
        .variants
        .first()
        .map_or(ctx.settings.shop.currency(), |v| v.price.currency)
        .code();
    let visitor = Visitor::of(req);
    let template = ProductPage {
        layout: layout(ctx, &visitor, &product.name, Some(admin), "products"),
        id: product.id,
        categories: category_options(ctx, &fields.category_id).await?,
        name: product.name,
        slug: product.slug,
        status: status_label(product.status),
        archived: product.status == ProductStatus::Archived,
        fields,
        product_error,
        variants,
        new_variant,
        new_variant_error,
        reasons: StockReason::ADJUSTMENTS
            .into_iter()
            .map(|r| (r.as_str(), r.label()))
            .collect(),
        currency,
        can_manage: admin.role.allows(Permission::Manage),
        notice,
    };
    page(req, ctx, &visitor, &template, status)
}

async fn show_product(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    path: web::Path<i64>,
    query: web::Query<NoticeQuery>,
) -> Result<HttpResponse, AppError> {
    let admin = admin!(req, ctx, Permission::View);
    let product = product_or_404(&ctx, path.into_inner()).await?;
    let notice = query.notice.as_deref().and_then(notice_text);
    product_page(&req, &ctx, &admin, product, None, notice).await
}

#[derive(Debug, Deserialize)]
struct ProductForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(flatten)]
    product: ProductFields,
}

async fn update_product(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    path: web::Path<i64>,
    form: web::Form<ProductForm>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let admin = admin!(req, ctx, Permission::Manage);
    let id = path.into_inner();
    let before = product_or_404(&ctx, id).await?;
    let result = match form.product.parse() {
        Ok(draft) => crate::catalog::update_product(&ctx.writer, id, &draft).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => {
            let after = product_or_404(&ctx, id).await?;
            audit(
                &ctx,
                &admin,
                "product_update",
                &audit_target_product(id),
                to_json(&product_fields_json(&before)),
                to_json(&product_fields_json(&after)),
            )
            .await?;
            Ok(see_other(format!("/admin/products/{id}?notice=saved")))
        }
        Err(error) if error.is_correctable() => {
            let failed = Failed::Product(form.into_inner().product, error.to_string());
            product_page(&req, &ctx, &admin, before, Some(failed), None).await
        }
        Err(EditError::NotFound) => Err(AppError::NotFound),
        Err(error) => Err(internal(error)),
    }
}

/// A product's own fields for the audit log (variants are audited apart).
fn product_fields_json(product: &ProductRecord) -> serde_json::Value {
    json!({
        "name": product.name,
        "slug": product.slug,
        "category_id": product.category_id,
        "description": product.description,
        "tags": product.tags,
        "featured": product.featured,
        "status": product.status,
    })
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf_token: String,
}

async fn change_status(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    id: i64,
    form: &CsrfForm,
    status: ProductStatus,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let admin = admin!(req, ctx, Permission::Manage);
    let before = product_or_404(&ctx, id).await?;
    let changed = match crate::catalog::set_product_status(&ctx.writer, id, status).await {
        Ok(changed) => changed,
        Err(EditError::NotFound) => return Err(AppError::NotFound),
        Err(error) => return Err(internal(error)),
    };
    if !changed {
        return Ok(see_other(format!("/admin/products/{id}?notice=unchanged")));
    }
    let (action, notice) = match status {
        ProductStatus::Archived => ("product_archive", "archived"),
        ProductStatus::Active => ("product_unarchive", "unarchived"),
    };
    audit(
        &ctx,
        &admin,
        action,
        &audit_target_product(id),
        Some(json!({"status": before.status})),
        Some(json!({"status": status})),
    )
    .await?;
    Ok(see_other(format!("/admin/products/{id}?notice={notice}")))
}

async fn archive_product(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    path: web::Path<i64>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    change_status(req, ctx, path.into_inner(), &form, ProductStatus::Archived).await
}

async fn unarchive_product(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    path: web::Path<i64>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    change_status(req, ctx, path.into_inner(), &form, ProductStatus::Active).await
}

// ---------------------------------------------------------------------------
// Variants and stock.

#[derive(Debug, Deserialize)]
struct VariantForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(flatten)]
    variant: VariantFields,
}

async fn add_variant(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    path: web::Path<i64>,
    form: web::Form<VariantForm>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let admin = admin!(req, ctx, Permission::Manage);
    let id = path.into_inner();
    let product = product_or_404(&ctx, id).await?;
    let currency = product
        .variants
        .first()
        .map_or(ctx.settings.shop.currency(), |v| v.price.currency);
    let checked = form.variant.parse(currency).and_then(|draft| {
        let opening = edit::parse_opening_stock(&form.variant.opening_stock)?;
        Ok((draft, opening))
    });
    let added = match checked {
        Ok((draft, opening)) => {
            crate::catalog::add_variant(&ctx.writer, id, &draft, opening, currency, &admin.email)
                .await
                .map(|variant_id| (variant_id, opening))
        }
        Err(error) => Err(error),
    };
    match added {
        Ok((variant_id, opening)) => {
            let after = crate::catalog::variant_record_by_id(&ctx.db, variant_id)
                .await
                .map_err(internal)?;
            audit(
                &ctx,
                &admin,
                "variant_create",
                &audit_target_product(id),
                None,
                Some(
                    json!({"variant": after.as_ref().and_then(to_json), "opening_stock": opening}),
                ),
            )
            .await?;
            Ok(see_other(format!(
                "/admin/products/{id}?notice=variant_added"
            )))
        }
        Err(error) if error.is_correctable() => {
            let failed = Failed::NewVariant(form.into_inner().variant, error.to_string());
            product_page(&req, &ctx, &admin, product, Some(failed), None).await
        }
        Err(EditError::NotFound) => Err(AppError::NotFound),
        Err(error) => Err(internal(error)),
    }
}

/// The product and its variant `variant_id`, or 404 when the variant is
/// not the product's.
async fn product_and_variant(
    ctx: &AppContext,
    id: i64,
    variant_id: i64,
) -> Result<(ProductRecord, VariantRecord), AppError> {
    let product = product_or_404(ctx, id).await?;
    let variant = product
        .variants
        .iter()
        .find(|v| v.id == variant_id)
        .cloned()
        .ok_or(AppError::NotFound)?;
    Ok((product, variant))
}

async fn update_variant(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    path: web::Path<(i64, i64)>,
    form: web::Form<VariantForm>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let admin = admin!(req, ctx, Permission::Manage);
    let (id, variant_id) = path.into_inner();
    let (product, before) = product_and_variant(&ctx, id, variant_id).await?;
    // The SKU stays what it is: orders and the ledger refer to it.
    let mut typed = form.into_inner().variant;
    typed.sku = before.sku.clone();
    let result = match typed.parse(before.price.currency) {
        Ok(draft) => crate::catalog::update_variant(&ctx.writer, variant_id, &draft).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => {
            let after = crate::catalog::variant_record_by_id(&ctx.db, variant_id)
                .await
                .map_err(internal)?;
            audit(
                &ctx,
                &admin,
                "variant_update",
                &format!("variant:{}", before.sku),
                to_json(&before),
                after.as_ref().and_then(to_json),
            )
            .await?;
            Ok(see_other(format!(
                "/admin/products/{id}?notice=variant_saved"
            )))
        }
        Err(error) if error.is_correctable() => {
            let failed = Failed::Variant(variant_id, typed, error.to_string());
            product_page(&req, &ctx, &admin, product, Some(failed), None).await
        }
        Err(EditError::NotFound) => Err(AppError::NotFound),
        Err(error) => Err(internal(error)),
    }
}

#[derive(Debug, Deserialize)]
struct StockForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(flatten)]
    stock: StockFields,
}

async fn adjust_stock(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    path: web::Path<(i64, i64)>,
    form: web::Form<StockForm>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let admin = admin!(req, ctx, Permission::Manage);
    let (id, variant_id) = path.into_inner();
    let (product, before) = product_and_variant(&ctx, id, variant_id).await?;
    let typed = form.into_inner().stock;
    let result = match Adjustment::parse(&typed.delta, &typed.reason, &typed.note) {
        Ok(adjustment) => {
            crate::catalog::adjust_stock(&ctx.writer, variant_id, &adjustment, &admin.email)
                .await
                .map(|done| (adjustment, done))
        }
        Err(error) => Err(error),
    };
    match result {
        Ok((adjustment, done)) => {
            audit(
                &ctx,
                &admin,
                "stock_adjust",
                &format!("variant:{}", before.sku),
                Some(json!({"stock_on_hand": done.before, "reserved": before.reserved})),
                Some(json!({
                    "stock_on_hand": done.after,
                    "reserved": done.reserved,
                    "delta": adjustment.delta,
                    "reason": adjustment.reason,
                    "note": adjustment.note,
                })),
            )
            .await?;
            Ok(see_other(format!(
                "/admin/products/{id}?notice=stock_adjusted"
            )))
        }
        Err(error) if error.is_correctable() => {
            let failed = Failed::Stock(variant_id, typed, error.to_string());
            product_page(&req, &ctx, &admin, product, Some(failed), None).await
        }
        Err(EditError::NotFound) => Err(AppError::NotFound),
        Err(error) => Err(internal(error)),
    }
}
