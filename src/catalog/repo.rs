//! Catalog queries. The only place that touches the catalog's sea-orm entities.

use std::collections::HashMap;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, Statement, TransactionTrait,
};
use time::OffsetDateTime;

use super::edit::{
    Adjustment, EditError, LedgerEntry, LowStockVariant, ProductDraft, ProductFilter,
    ProductRecord, ProductStatus, ProductSummary, StockAdjusted, StockReason, VariantDraft,
    VariantRecord, unique_slug,
};
use super::entity::{catalog_state, category, product, product_image, stock_ledger, variant};
use super::model::{Category, Currency, Image, Money, Product, StockState, Variant};
use super::read_model::CatalogStamp;
use crate::platform::db::Writer;

/// The most search hits kept for one query; shoppers never page further.
const SEARCH_LIMIT: u32 = 500;

/// The catalog version and the latest stock change, read together.
pub async fn current_stamp<C: ConnectionTrait>(db: &C) -> Result<CatalogStamp, DbErr> {
    use sea_orm::QuerySelect;
    let version = catalog_state::Entity::find_by_id(1)
        .one(db)
        .await?
        .map(|row| row.version)
        .unwrap_or(0);
    let stock_changed_at: Option<OffsetDateTime> = variant::Entity::find()
        .select_only()
        .column_as(variant::Column::UpdatedAt.max(), "latest")
        .into_tuple()
        .one(db)
        .await?
        .flatten();
    Ok(CatalogStamp {
        version,
        stock_changed_at,
    })
}

/// Bumps the catalog version inside the caller's transaction, so replicas
/// reload exactly when the change commits.
pub async fn bump_version<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    use sea_orm::sea_query::ExprTrait;
    catalog_state::Entity::update_many()
        .col_expr(
            catalog_state::Column::Version,
            Expr::col(catalog_state::Column::Version).add(1),
        )
        .col_expr(
            catalog_state::Column::UpdatedAt,
            Expr::value(OffsetDateTime::now_utc()),
        )
        .filter(catalog_state::Column::Id.eq(1))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn product_count(db: &DatabaseConnection) -> Result<u64, DbErr> {
    product::Entity::find().count(db).await
}

/// Everything the read model needs, read in one transaction so the version
/// matches the rows.
pub async fn load_catalog(
    db: &DatabaseConnection,
    low_stock_threshold: i32,
) -> Result<(CatalogStamp, Vec<Category>, Vec<Product>), DbErr> {
    let txn = db.begin().await?;
    let stamp = current_stamp(&txn).await?;
    let categories = category::Entity::find()
        .order_by_asc(category::Column::Position)
        .order_by_asc(category::Column::Id)
        .all(&txn)
        .await?;
    let products = product::Entity::find()
        .filter(product::Column::Status.eq("active"))
        .order_by_asc(product::Column::Id)
        .all(&txn)
        .await?;
    let variants = variant::Entity::find()
        .order_by_asc(variant::Column::ProductId)
        .order_by_asc(variant::Column::Position)
        .order_by_asc(variant::Column::Id)
        .all(&txn)
        .await?;
    let images = product_image::Entity::find()
        .order_by_asc(product_image::Column::ProductId)
        .order_by_asc(product_image::Column::Position)
        .all(&txn)
        .await?;
    txn.commit().await?;

    let mut variants_by_product: HashMap<i64, Vec<Variant>> = HashMap::new();
    for row in variants {
        let Some(currency) = Currency::parse(&row.currency) else {
            tracing::warn!(sku = %row.sku, currency = %row.currency, "variant with unknown currency skipped");
            continue;
        };
        let available = row.stock_on_hand - row.reserved;
        variants_by_product
            .entry(row.product_id)
            .or_default()
            .push(Variant {
                id: row.id,
                sku: row.sku,
                title: row.title,
                size: row.size,
                colour: row.colour,
                price: Money::new(row.price_minor, currency),
                available,
                stock: StockState::from_available(available, low_stock_threshold),
            });
    }
    let mut images_by_product: HashMap<i64, Vec<Image>> = HashMap::new();
    for row in images {
        images_by_product
            .entry(row.product_id)
            .or_default()
            .push(Image {
                url: row.url,
                alt: row.alt,
            });
    }
    let category_names: HashMap<i64, (&str, &str)> = categories
        .iter()
        .map(|c| (c.id, (c.slug.as_str(), c.name.as_str())))
        .collect();

    let mut out = Vec::with_capacity(products.len());
    for row in products {
        let variants = variants_by_product.remove(&row.id).unwrap_or_default();
        // A product nobody can buy in any variant is not shown.
        let (Some(min), Some(max)) = (
            variants.iter().map(|v| v.price).min(),
            variants.iter().map(|v| v.price).max(),
        ) else {
            continue;
        };
        let Some((category_slug, category_name)) = category_names.get(&row.category_id) else {
            continue;
        };
        let stock = StockState::of_variants(&variants, low_stock_threshold);
        out.push(Product {
            id: row.id,
            slug: row.slug,
            name: row.name,
            description: row.description,
            tags: row
                .tags
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            featured: row.featured,
            category_id: row.category_id,
            category_slug: category_slug.to_string(),
            category_name: category_name.to_string(),
            created_at: row.created_at,
            variants,
            images: images_by_product.remove(&row.id).unwrap_or_default(),
            min_price: min,
            max_price: max,
            stock,
        });
    }
    let categories = categories
        .into_iter()
        .map(|c| Category {
            id: c.id,
            slug: c.slug,
            name: c.name,
            description: c.description,
            product_count: 0,
        })
        .collect();
    Ok((stamp, categories, out))
}

/// How the words of a search combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// Every word must appear (as a word prefix).
    All,
    /// Any word may appear; more matches rank higher.
    Any,
}

/// Ids of active products matching the terms, best first, using SQLite FTS5
/// or PostgreSQL full-text search. Terms must already be normalised to
/// letters and digits (see `SearchTerms`).
pub async fn search_product_ids(
    db: &DatabaseConnection,
    terms: &[String],
    mode: Match,
) -> Result<Vec<i64>, DbErr> {
    if terms.is_empty() {
        return Ok(Vec::new());
    }
    let backend = db.get_database_backend();
    let statement = match backend {
        DbBackend::Sqlite => {
            let joiner = if mode == Match::All { " AND " } else { " OR " };
            let expression = terms
                .iter()
                .map(|t| format!("\"{t}\"*"))
                .collect::<Vec<_>>()
                .join(joiner);
            Statement::from_sql_and_values(
                backend,
                "SELECT p.id FROM products_fts f JOIN products p ON p.id = f.rowid \
                 WHERE products_fts MATCH $1 AND p.status = 'active' \
                 ORDER BY bm25(products_fts, 10.0, 4.0, 1.0), p.id LIMIT $2",
                [expression.into(), SEARCH_LIMIT.into()],
            )
        }
        DbBackend::Postgres => {
            let joiner = if mode == Match::All { " & " } else { " | " };
            let expression = terms
                .iter()
                .map(|t| format!("{t}:*"))
                .collect::<Vec<_>>()
                .join(joiner);
            Statement::from_sql_and_values(
                backend,
                "SELECT id FROM products, to_tsquery('english', $1) query \
                 WHERE status = 'active' AND search_vector @@ query \
                 ORDER BY ts_rank(search_vector, query) DESC, id LIMIT $2",
                [expression.into(), (SEARCH_LIMIT as i64).into()],
            )
        }
        other => {
            return Err(DbErr::Custom(format!(
                "search is not supported on {other:?}"
            )));
        }
    };
    let rows = db.query_all_raw(statement).await?;
    rows.iter()
        .map(|row| row.try_get_by_index::<i64>(0))
        .collect::<Result<Vec<_>, _>>()
}

/// A category to insert, with its products.
pub struct NewCategory {
    pub slug: String,
    pub name: String,
    pub description: String,
    pub position: i32,
    pub products: Vec<NewProduct>,
}

pub struct NewProduct {
    pub slug: String,
    pub name: String,
    pub description: String,
    pub tags: String,
    pub featured: bool,
    pub created_at: OffsetDateTime,
    pub variants: Vec<NewVariant>,
    pub image_url: String,
}

pub struct NewVariant {
    pub sku: String,
    pub title: String,
    pub size: Option<String>,
    pub colour: Option<String>,
    pub price_minor: i64,
    pub currency: &'static str,
    pub stock_on_hand: i32,
}

/// Inserts categories with their products, variants and images in one
/// transaction and bumps the catalog version. Returns the products inserted.
pub async fn insert_catalog(
    db: &DatabaseConnection,
    categories: Vec<NewCategory>,
) -> Result<usize, DbErr> {
    use sea_orm::ActiveValue::{NotSet, Set};

    let txn = db.begin().await?;
    let now = OffsetDateTime::now_utc();
    let mut inserted = 0;
    for new_category in categories {
        let category_id = category::Entity::insert(category::ActiveModel {
            id: NotSet,
            slug: Set(new_category.slug),
            name: Set(new_category.name),
            description: Set(new_category.description),
            position: Set(new_category.position),
            created_at: Set(now),
        })
        .exec(&txn)
        .await?
        .last_insert_id;

        for new_product in new_category.products {
            let product_id = product::Entity::insert(product::ActiveModel {
                id: NotSet,
                category_id: Set(category_id),
                slug: Set(new_product.slug),
                name: Set(new_product.name.clone()),
                description: Set(new_product.description),
                tags: Set(new_product.tags),
                featured: Set(new_product.featured),
                status: Set("active".to_string()),
                created_at: Set(new_product.created_at),
                updated_at: Set(new_product.created_at),
            })
            .exec(&txn)
            .await?
            .last_insert_id;

            let variants = new_product
                .variants
                .into_iter()
                .enumerate()
                .map(|(position, v)| variant::ActiveModel {
                    id: NotSet,
                    product_id: Set(product_id),
                    sku: Set(v.sku),
                    title: Set(v.title),
                    size: Set(v.size),
                    colour: Set(v.colour),
                    price_minor: Set(v.price_minor),
                    currency: Set(v.currency.to_string()),
                    stock_on_hand: Set(v.stock_on_hand),
                    reserved: Set(0),
                    position: Set(position as i32),
                    created_at: Set(now),
                    updated_at: Set(now),
                });
            variant::Entity::insert_many(variants).exec(&txn).await?;
            product_image::Entity::insert(product_image::ActiveModel {
                id: NotSet,
                product_id: Set(product_id),
                url: Set(new_product.image_url),
                alt: Set(new_product.name),
                position: Set(0),
            })
            .exec(&txn)
            .await?;
            inserted += 1;
        }
    }
    bump_version(&txn).await?;
    txn.commit().await?;
    Ok(inserted)
}

/// Sets a variant's stock on hand and bumps the version, with a ledger row
/// (`count_correction`, no admin): for operators and tests. Admins use
/// [`adjust_stock`], which never goes below the reserved units.
pub async fn set_stock(
    db: &DatabaseConnection,
    sku: &str,
    stock_on_hand: i32,
) -> Result<bool, DbErr> {
    let txn = db.begin().await?;
    // Write first (SQLite takes its lock), then read what it was.
    bump_version(&txn).await?;
    let Some(before) = variant::Entity::find()
        .filter(variant::Column::Sku.eq(sku))
        .one(&txn)
        .await?
    else {
        txn.rollback().await?;
        return Ok(false);
    };
    variant::Entity::update_many()
        .col_expr(variant::Column::StockOnHand, Expr::value(stock_on_hand))
        .col_expr(
            variant::Column::UpdatedAt,
            Expr::value(OffsetDateTime::now_utc()),
        )
        .filter(variant::Column::Id.eq(before.id))
        .exec(&txn)
        .await?;
    let delta = stock_on_hand - before.stock_on_hand;
    if delta != 0 {
        write_ledger(
            &txn,
            before.id,
            delta,
            StockReason::CountCorrection,
            LedgerBy::Operator("set by an operator"),
        )
        .await?;
    }
    txn.commit().await?;
    Ok(true)
}

/// A variant as checkout prices it: read from the database, never from the
/// shopper's form or the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantForSale {
    pub id: i64,
    pub product_name: String,
    pub title: String,
    pub sku: String,
    pub price_minor: i64,
    pub currency: String,
    pub available: i32,
}

/// The category slug of each variant among `ids` (archived products too),
/// for order events and analytics.
pub async fn variant_categories<C: ConnectionTrait>(
    db: &C,
    ids: &[i64],
) -> Result<HashMap<i64, String>, DbErr> {
    let variants = variant::Entity::find()
        .filter(variant::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?;
    let product_ids: Vec<i64> = variants.iter().map(|v| v.product_id).collect();
    let products: HashMap<i64, i64> = product::Entity::find()
        .filter(product::Column::Id.is_in(product_ids))
        .all(db)
        .await?
        .into_iter()
        .map(|p| (p.id, p.category_id))
        .collect();
    let categories: HashMap<i64, String> = category::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|c| (c.id, c.slug))
        .collect();
    Ok(variants
        .into_iter()
        .filter_map(|v| {
            let category = products.get(&v.product_id)?;
            Some((v.id, categories.get(category)?.clone()))
        })
        .collect())
}

/// The active, purchasable variants among `ids`.
pub async fn variants_for_sale<C: ConnectionTrait>(
    db: &C,
    ids: &[i64],
) -> Result<Vec<VariantForSale>, DbErr> {
    let variants = variant::Entity::find()
        .filter(variant::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?;
    let product_ids: Vec<i64> = variants.iter().map(|v| v.product_id).collect();
    let products: HashMap<i64, product::Model> = product::Entity::find()
        .filter(product::Column::Id.is_in(product_ids))
        .filter(product::Column::Status.eq("active"))
        .all(db)
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    Ok(variants
        .into_iter()
        .filter_map(|v| {
            let product = products.get(&v.product_id)?;
            Some(VariantForSale {
                id: v.id,
                product_name: product.name.clone(),
                title: v.title,
                sku: v.sku,
                price_minor: v.price_minor,
                currency: v.currency,
                available: v.stock_on_hand - v.reserved,
            })
        })
        .collect())
}

/// Runs one conditional stock update; true when the condition held.
async fn stock_update<C: ConnectionTrait>(
    db: &C,
    sql: &str,
    variant_id: i64,
    quantity: i32,
) -> Result<bool, DbErr> {
    let backend = db.get_database_backend();
    let result = db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [
                quantity.into(),
                variant_id.into(),
                OffsetDateTime::now_utc().into(),
            ],
        ))
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Holds `quantity` units for an unpaid order, if that many are available.
pub async fn reserve_stock<C: ConnectionTrait>(
    db: &C,
    variant_id: i64,
    quantity: i32,
) -> Result<bool, DbErr> {
    stock_update(
        db,
        "UPDATE variants SET reserved = reserved + $1, updated_at = $3 \
         WHERE id = $2 AND stock_on_hand - reserved >= $1",
        variant_id,
        quantity,
    )
    .await
}

/// Gives back a reservation (checkout expired or cancelled).
pub async fn release_stock<C: ConnectionTrait>(
    db: &C,
    variant_id: i64,
    quantity: i32,
) -> Result<bool, DbErr> {
    stock_update(
        db,
        "UPDATE variants SET reserved = reserved - $1, updated_at = $3 \
         WHERE id = $2 AND reserved >= $1",
        variant_id,
        quantity,
    )
    .await
}

/// Turns a reservation into a sale: the units leave the shelf, and the
/// stock ledger says which order took them.
pub async fn take_reserved_stock<C: ConnectionTrait>(
    db: &C,
    variant_id: i64,
    quantity: i32,
    order_id: i64,
) -> Result<bool, DbErr> {
    let taken = stock_update(
        db,
        "UPDATE variants SET stock_on_hand = stock_on_hand - $1, reserved = reserved - $1, updated_at = $3 \
         WHERE id = $2 AND reserved >= $1 AND stock_on_hand >= $1",
        variant_id,
        quantity,
    )
    .await?;
    if taken {
        write_ledger(
            db,
            variant_id,
            -quantity,
            StockReason::Sale,
            LedgerBy::Order(order_id),
        )
        .await?;
    }
    Ok(taken)
}

/// Sells units that were not reserved (a payment that arrived after its
/// reservation was released), only if they are still available.
pub async fn take_unreserved_stock<C: ConnectionTrait>(
    db: &C,
    variant_id: i64,
    quantity: i32,
    order_id: i64,
) -> Result<bool, DbErr> {
    let taken = stock_update(
        db,
        "UPDATE variants SET stock_on_hand = stock_on_hand - $1, updated_at = $3 \
         WHERE id = $2 AND stock_on_hand - reserved >= $1",
        variant_id,
        quantity,
    )
    .await?;
    if taken {
        write_ledger(
            db,
            variant_id,
            -quantity,
            StockReason::Sale,
            LedgerBy::Order(order_id),
        )
        .await?;
    }
    Ok(taken)
}

/// Puts units back on the shelf (a refund with restocking), in the ledger
/// under the order's id.
pub async fn restock<C: ConnectionTrait>(
    db: &C,
    variant_id: i64,
    quantity: i32,
    order_id: i64,
) -> Result<bool, DbErr> {
    let restocked = stock_update(
        db,
        "UPDATE variants SET stock_on_hand = stock_on_hand + $1, updated_at = $3 WHERE id = $2",
        variant_id,
        quantity,
    )
    .await?;
    if restocked {
        write_ledger(
            db,
            variant_id,
            quantity,
            StockReason::Restock,
            LedgerBy::Order(order_id),
        )
        .await?;
    }
    Ok(restocked)
}

// ---------------------------------------------------------------------------
// The stock ledger.

/// Who moved the stock, for the ledger.
pub enum LedgerBy<'a> {
    Admin {
        email: &'a str,
        note: &'a str,
    },
    Order(i64),
    /// A command or a test, with a note.
    Operator(&'a str),
}

/// Appends a ledger row for a change just made to `variant_id`, reading
/// the SKU and the units now on hand in the same statement. Call it inside
/// the transaction that changed the stock, after the change.
async fn write_ledger<C: ConnectionTrait>(
    db: &C,
    variant_id: i64,
    delta: i32,
    reason: StockReason,
    by: LedgerBy<'_>,
) -> Result<(), DbErr> {
    let (note, admin_email, order_id) = match by {
        LedgerBy::Admin { email, note } => (note.to_string(), Some(email.to_string()), None),
        LedgerBy::Order(order_id) => (String::new(), None, Some(order_id)),
        LedgerBy::Operator(note) => (note.to_string(), None, None),
    };
    let backend = db.get_database_backend();
    db.execute_raw(Statement::from_sql_and_values(
        backend,
        "INSERT INTO stock_ledger \
         (variant_id, sku, delta, stock_after, reason, note, admin_email, order_id, created_at) \
         SELECT id, sku, $1, stock_on_hand, $2, $3, $4, $5, $6 FROM variants WHERE id = $7",
        [
            delta.into(),
            reason.as_str().into(),
            note.into(),
            admin_email.into(),
            order_id.into(),
            OffsetDateTime::now_utc().into(),
            variant_id.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// The newest ledger rows of the variants, at most `limit` in all, newest
/// first.
pub async fn stock_ledger(
    db: &DatabaseConnection,
    variant_ids: &[i64],
    limit: u64,
) -> Result<Vec<LedgerEntry>, DbErr> {
    use sea_orm::QuerySelect;
    Ok(stock_ledger::Entity::find()
        .filter(stock_ledger::Column::VariantId.is_in(variant_ids.iter().copied()))
        .order_by_desc(stock_ledger::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(|row| LedgerEntry {
            id: row.id,
            variant_id: row.variant_id,
            sku: row.sku,
            delta: row.delta,
            stock_after: row.stock_after,
            reason: row.reason,
            note: row.note,
            admin_email: row.admin_email,
            order_id: row.order_id,
            created_at: row.created_at,
        })
        .collect())
}

// ---------------------------------------------------------------------------
// The back-office's reads: every product, archived ones too.

fn currency_of(code: &str) -> Currency {
    Currency::parse(code).unwrap_or(Currency::Myr)
}

fn status_of(raw: &str) -> ProductStatus {
    ProductStatus::parse(raw).unwrap_or(ProductStatus::Archived)
}

/// Every category as (id, name), in the storefront's order.
pub async fn category_choices(db: &DatabaseConnection) -> Result<Vec<(i64, String)>, DbErr> {
    Ok(category::Entity::find()
        .order_by_asc(category::Column::Position)
        .order_by_asc(category::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(|c| (c.id, c.name))
        .collect())
}

/// One page of products matching the filter, by name, with their stock
/// totals and price ranges; and how many match in all.
pub async fn list_products(
    db: &DatabaseConnection,
    filter: &ProductFilter,
    page: u64,
    per_page: u64,
) -> Result<(Vec<ProductSummary>, u64), DbErr> {
    use sea_orm::sea_query::{ExprTrait, Func, LikeExpr};
    use sea_orm::{Condition, QuerySelect, QueryTrait};

    let mut select = product::Entity::find();
    let search = filter.search.trim().to_lowercase();
    if !search.is_empty() {
        let escaped: String = search
            .chars()
            .flat_map(|c| match c {
                '%' | '_' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        let pattern = || LikeExpr::new(format!("%{escaped}%")).escape('\\');
        let by_sku = variant::Entity::find()
            .select_only()
            .column(variant::Column::ProductId)
            .filter(Func::lower(Expr::col((variant::Entity, variant::Column::Sku))).like(pattern()))
            .into_query();
        select = select.filter(
            Condition::any()
                .add(
                    Func::lower(Expr::col((product::Entity, product::Column::Name)))
                        .like(pattern()),
                )
                .add(product::Column::Id.in_subquery(by_sku)),
        );
    }
    if let Some(category_id) = filter.category_id {
        select = select.filter(product::Column::CategoryId.eq(category_id));
    }
    if let Some(status) = filter.status {
        select = select.filter(product::Column::Status.eq(status.as_str()));
    }
    let paginator = select
        .order_by_asc(product::Column::Name)
        .order_by_asc(product::Column::Id)
        .paginate(db, Ord::max(per_page, 1));
    let total = paginator.num_items().await?;
    let products = paginator.fetch_page(page.saturating_sub(1)).await?;

    let ids: Vec<i64> = products.iter().map(|p| p.id).collect();
    let variants = variant::Entity::find()
        .filter(variant::Column::ProductId.is_in(ids))
        .all(db)
        .await?;
    let categories: HashMap<i64, String> = category_choices(db).await?.into_iter().collect();
    let mut by_product: HashMap<i64, Vec<variant::Model>> = HashMap::new();
    for row in variants {
        by_product.entry(row.product_id).or_default().push(row);
    }
    let summaries = products
        .into_iter()
        .map(|p| {
            let variants = by_product.remove(&p.id).unwrap_or_default();
            let prices = variants
                .iter()
                .map(|v| Money::new(v.price_minor, currency_of(&v.currency)));
            ProductSummary {
                id: p.id,
                category_name: categories.get(&p.category_id).cloned().unwrap_or_default(),
                status: status_of(&p.status),
                name: p.name,
                slug: p.slug,
                variants: variants.len(),
                on_hand: variants.iter().map(|v| i64::from(v.stock_on_hand)).sum(),
                reserved: variants.iter().map(|v| i64::from(v.reserved)).sum(),
                min_price: prices.clone().min(),
                max_price: prices.max(),
            }
        })
        .collect();
    Ok((summaries, total))
}

/// Variants of active products with at most `threshold` units available
/// (on hand minus reserved), fewest first.
pub async fn low_stock(
    db: &DatabaseConnection,
    threshold: i32,
    limit: u64,
) -> Result<Vec<LowStockVariant>, DbErr> {
    use sea_orm::sea_query::ExprTrait;
    use sea_orm::{QuerySelect, QueryTrait};
    let active = product::Entity::find()
        .select_only()
        .column(product::Column::Id)
        .filter(product::Column::Status.eq(ProductStatus::Active.as_str()))
        .into_query();
    let available = Expr::col((variant::Entity, variant::Column::StockOnHand))
        .sub(Expr::col((variant::Entity, variant::Column::Reserved)));
    let variants = variant::Entity::find()
        .filter(variant::Column::ProductId.in_subquery(active))
        .filter(available.clone().lte(threshold))
        .order_by_asc(available)
        .order_by_asc(variant::Column::Sku)
        .limit(limit)
        .all(db)
        .await?;
    let ids: Vec<i64> = variants.iter().map(|v| v.product_id).collect();
    let names: HashMap<i64, String> = product::Entity::find()
        .filter(product::Column::Id.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    Ok(variants
        .into_iter()
        .map(|v| LowStockVariant {
            product_id: v.product_id,
            product_name: names.get(&v.product_id).cloned().unwrap_or_default(),
            variant_id: v.id,
            sku: v.sku,
            title: v.title,
            stock_on_hand: v.stock_on_hand,
            reserved: v.reserved,
        })
        .collect())
}

/// A product with every variant, archived or not.
pub async fn product_record<C: ConnectionTrait>(
    db: &C,
    id: i64,
) -> Result<Option<ProductRecord>, DbErr> {
    let Some(row) = product::Entity::find_by_id(id).one(db).await? else {
        return Ok(None);
    };
    let variants = variant::Entity::find()
        .filter(variant::Column::ProductId.eq(id))
        .order_by_asc(variant::Column::Position)
        .order_by_asc(variant::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(variant_record)
        .collect();
    Ok(Some(ProductRecord {
        id: row.id,
        slug: row.slug,
        name: row.name,
        category_id: row.category_id,
        description: row.description,
        tags: row.tags,
        featured: row.featured,
        status: status_of(&row.status),
        variants,
    }))
}

fn variant_record(row: variant::Model) -> VariantRecord {
    VariantRecord {
        id: row.id,
        product_id: row.product_id,
        price: Money::new(row.price_minor, currency_of(&row.currency)),
        sku: row.sku,
        title: row.title,
        size: row.size,
        colour: row.colour,
        stock_on_hand: row.stock_on_hand,
        reserved: row.reserved,
    }
}

/// A variant by id.
pub async fn variant_record_by_id<C: ConnectionTrait>(
    db: &C,
    id: i64,
) -> Result<Option<VariantRecord>, DbErr> {
    Ok(variant::Entity::find_by_id(id)
        .one(db)
        .await?
        .map(variant_record))
}

// ---------------------------------------------------------------------------
// The back-office's writes. Each runs in one transaction through the
// `Writer`; catalog edits bump `catalog_state.version` first (the first
// statement writes, so SQLite takes its lock at once, and on PostgreSQL
// concurrent edits queue on the version row, which makes the slug and SKU
// checks below race-free); stock adjustments stamp `variants.updated_at`.

async fn check_category<C: ConnectionTrait>(db: &C, id: i64) -> Result<(), EditError> {
    match category::Entity::find_by_id(id).one(db).await? {
        Some(_) => Ok(()),
        None => Err(EditError::Invalid("Choose a category.".into())),
    }
}

async fn check_sku_free<C: ConnectionTrait>(db: &C, sku: &str) -> Result<(), EditError> {
    let taken = variant::Entity::find()
        .filter(variant::Column::Sku.eq(sku))
        .count(db)
        .await?
        > 0;
    if taken {
        return Err(EditError::SkuTaken(sku.to_string()));
    }
    Ok(())
}

/// A unique-index violation on insert becomes `SkuTaken` (a writer in
/// another process won the same SKU).
fn sku_conflict(error: DbErr, sku: &str) -> EditError {
    match error.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => EditError::SkuTaken(sku.to_string()),
        _ => EditError::Database(error),
    }
}

async fn insert_variant<C: ConnectionTrait>(
    db: &C,
    product_id: i64,
    draft: &VariantDraft,
    currency: Currency,
    opening_stock: i32,
    position: i32,
    admin_email: &str,
) -> Result<i64, EditError> {
    use sea_orm::ActiveValue::{NotSet, Set};
    let now = OffsetDateTime::now_utc();
    let id = variant::Entity::insert(variant::ActiveModel {
        id: NotSet,
        product_id: Set(product_id),
        sku: Set(draft.sku.clone()),
        title: Set(draft.title.clone()),
        size: Set(draft.size.clone()),
        colour: Set(draft.colour.clone()),
        price_minor: Set(draft.price_minor),
        currency: Set(currency.code().to_string()),
        stock_on_hand: Set(opening_stock),
        reserved: Set(0),
        position: Set(position),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec(db)
    .await
    .map_err(|e| sku_conflict(e, &draft.sku))?
    .last_insert_id;
    if opening_stock > 0 {
        write_ledger(
            db,
            id,
            opening_stock,
            StockReason::Opening,
            LedgerBy::Admin {
                email: admin_email,
                note: "",
            },
        )
        .await?;
    }
    Ok(id)
}

/// Creates an active product with its first variant; returns its id. The
/// slug comes from the name, made unique.
pub async fn create_product(
    writer: &Writer,
    draft: &ProductDraft,
    first: &VariantDraft,
    opening_stock: i32,
    currency: Currency,
    admin_email: &str,
) -> Result<i64, EditError> {
    use sea_orm::ActiveValue::{NotSet, Set};
    use sea_orm::QuerySelect;
    let (txn, _permit) = writer.begin().await?;
    bump_version(&txn).await?;
    check_category(&txn, draft.category_id).await?;
    check_sku_free(&txn, &first.sku).await?;
    let base = unique_slug(&draft.name, &[]);
    let taken: Vec<String> = product::Entity::find()
        .select_only()
        .column(product::Column::Slug)
        .filter(product::Column::Slug.starts_with(base.as_str()))
        .into_tuple()
        .all(&txn)
        .await?;
    let slug = unique_slug(&draft.name, &taken);
    let now = OffsetDateTime::now_utc();
    let product_id = product::Entity::insert(product::ActiveModel {
        id: NotSet,
        category_id: Set(draft.category_id),
        slug: Set(slug.clone()),
        name: Set(draft.name.clone()),
        description: Set(draft.description.clone()),
        tags: Set(draft.tags.clone()),
        featured: Set(draft.featured),
        status: Set(ProductStatus::Active.as_str().to_string()),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec(&txn)
    .await?
    .last_insert_id;
    insert_variant(
        &txn,
        product_id,
        first,
        currency,
        opening_stock,
        0,
        admin_email,
    )
    .await?;
    // The storefront draws a picture from the product until photos exist.
    product_image::Entity::insert(product_image::ActiveModel {
        id: NotSet,
        product_id: Set(product_id),
        url: Set(format!("/media/products/{slug}.svg")),
        alt: Set(draft.name.clone()),
        position: Set(0),
    })
    .exec(&txn)
    .await?;
    txn.commit().await?;
    Ok(product_id)
}

/// Changes a product's own fields (its slug stays, so links keep working).
pub async fn update_product(
    writer: &Writer,
    id: i64,
    draft: &ProductDraft,
) -> Result<(), EditError> {
    let (txn, _permit) = writer.begin().await?;
    bump_version(&txn).await?;
    check_category(&txn, draft.category_id).await?;
    let updated = product::Entity::update_many()
        .col_expr(product::Column::Name, Expr::value(draft.name.clone()))
        .col_expr(product::Column::CategoryId, Expr::value(draft.category_id))
        .col_expr(
            product::Column::Description,
            Expr::value(draft.description.clone()),
        )
        .col_expr(product::Column::Tags, Expr::value(draft.tags.clone()))
        .col_expr(product::Column::Featured, Expr::value(draft.featured))
        .col_expr(
            product::Column::UpdatedAt,
            Expr::value(OffsetDateTime::now_utc()),
        )
        .filter(product::Column::Id.eq(id))
        .exec(&txn)
        .await?
        .rows_affected;
    if updated == 0 {
        txn.rollback().await?;
        return Err(EditError::NotFound);
    }
    product_image::Entity::update_many()
        .col_expr(product_image::Column::Alt, Expr::value(draft.name.clone()))
        .filter(product_image::Column::ProductId.eq(id))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(())
}

/// Archives or brings back a product. Returns whether its status changed.
pub async fn set_product_status(
    writer: &Writer,
    id: i64,
    status: ProductStatus,
) -> Result<bool, EditError> {
    let (txn, _permit) = writer.begin().await?;
    let changed = product::Entity::update_many()
        .col_expr(product::Column::Status, Expr::value(status.as_str()))
        .col_expr(
            product::Column::UpdatedAt,
            Expr::value(OffsetDateTime::now_utc()),
        )
        .filter(product::Column::Id.eq(id))
        .filter(product::Column::Status.ne(status.as_str()))
        .exec(&txn)
        .await?
        .rows_affected
        == 1;
    if !changed {
        let exists = product::Entity::find_by_id(id).one(&txn).await?.is_some();
        txn.rollback().await?;
        return if exists {
            Ok(false)
        } else {
            Err(EditError::NotFound)
        };
    }
    bump_version(&txn).await?;
    txn.commit().await?;
    Ok(true)
}

/// Adds a variant to a product, priced in the product's currency (or
/// `currency` for a product without variants); returns its id.
pub async fn add_variant(
    writer: &Writer,
    product_id: i64,
    draft: &VariantDraft,
    opening_stock: i32,
    currency: Currency,
    admin_email: &str,
) -> Result<i64, EditError> {
    let (txn, _permit) = writer.begin().await?;
    bump_version(&txn).await?;
    let Some(product) = product_record(&txn, product_id).await? else {
        txn.rollback().await?;
        return Err(EditError::NotFound);
    };
    check_sku_free(&txn, &draft.sku).await?;
    let currency = product
        .variants
        .first()
        .map_or(currency, |v| v.price.currency);
    let position = product.variants.len() as i32;
    let id = insert_variant(
        &txn,
        product_id,
        draft,
        currency,
        opening_stock,
        position,
        admin_email,
    )
    .await?;
    txn.commit().await?;
    Ok(id)
}

/// Changes a variant's title, size, colour and price (its SKU stays).
pub async fn update_variant(
    writer: &Writer,
    variant_id: i64,
    draft: &VariantDraft,
) -> Result<(), EditError> {
    let (txn, _permit) = writer.begin().await?;
    bump_version(&txn).await?;
    let updated = variant::Entity::update_many()
        .col_expr(variant::Column::Title, Expr::value(draft.title.clone()))
        .col_expr(variant::Column::Size, Expr::value(draft.size.clone()))
        .col_expr(variant::Column::Colour, Expr::value(draft.colour.clone()))
        .col_expr(variant::Column::PriceMinor, Expr::value(draft.price_minor))
        .col_expr(
            variant::Column::UpdatedAt,
            Expr::value(OffsetDateTime::now_utc()),
        )
        .filter(variant::Column::Id.eq(variant_id))
        .exec(&txn)
        .await?
        .rows_affected;
    if updated == 0 {
        txn.rollback().await?;
        return Err(EditError::NotFound);
    }
    txn.commit().await?;
    Ok(())
}

/// Adds (or takes away) units on hand with a ledger row, in one
/// transaction that stamps the variant's `updated_at`. Stock never goes
/// below what unpaid orders have reserved.
pub async fn adjust_stock(
    writer: &Writer,
    variant_id: i64,
    adjustment: &Adjustment,
    admin_email: &str,
) -> Result<StockAdjusted, EditError> {
    let (txn, _permit) = writer.begin().await?;
    let applied = stock_update(
        &txn,
        "UPDATE variants SET stock_on_hand = stock_on_hand + $1, updated_at = $3 \
         WHERE id = $2 AND stock_on_hand + $1 >= reserved",
        variant_id,
        adjustment.delta,
    )
    .await?;
    let current = variant_record_by_id(&txn, variant_id).await?;
    let Some(current) = current else {
        txn.rollback().await?;
        return Err(EditError::NotFound);
    };
    if !applied {
        txn.rollback().await?;
        return Err(EditError::BelowReserved {
            on_hand: current.stock_on_hand,
            reserved: current.reserved,
        });
    }
    write_ledger(
        &txn,
        variant_id,
        adjustment.delta,
        adjustment.reason,
        LedgerBy::Admin {
            email: admin_email,
            note: &adjustment.note,
        },
    )
    .await?;
    txn.commit().await?;
    Ok(StockAdjusted {
        before: current.stock_on_hand - adjustment.delta,
        after: current.stock_on_hand,
        reserved: current.reserved,
        sku: current.sku,
    })
}
